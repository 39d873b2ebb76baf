// Package dispatchtest holds test helpers for the work bridge: a real
// RabbitMQ broker started with scripts/rabbitmq.sh (one per test, or one
// per package started by the first test that needs it), an in-memory broker
// that implements node/dispatch's broker interfaces, and an in-memory
// registry store.
package dispatchtest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// InstallHint is the command that installs the broker the tests need.
const InstallHint = "apt-get update && apt-get install -y rabbitmq-server amqp-tools"

// ErrNotInstalled means rabbitmq-server is missing.
var ErrNotInstalled = errors.New("rabbitmq-server is not installed (" + InstallHint + ")")

// Broker is a private RabbitMQ started by scripts/rabbitmq.sh.
type Broker struct {
	// Dir is the broker's directory; URL its AMQP URL.
	Dir, URL string
}

// script is scripts/rabbitmq.sh of this repository.
func script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "scripts", "rabbitmq.sh")
}

func run(env []string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command("bash", append([]string{script()}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scripts/rabbitmq.sh %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String()), nil
}

// freePort returns a port in 20000–32767 that 127.0.0.1 can bind now.
// Below the kernel's ephemeral range (32768+), no outgoing connection and
// no other test's port-0 listener can take it before the broker binds it,
// as could happen to the script's own pick.
func freePort(taken int) (int, error) {
	for range 200 {
		p := 20000 + rand.IntN(12768)
		if p == taken {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			ln.Close()
			return p, nil
		}
	}
	return 0, errors.New("no free port below 32768 on 127.0.0.1")
}

// Start starts a broker in dir (which the broker's user must be able to
// reach: os.MkdirTemp("", ...) works, t.TempDir() does not — its parent is
// closed to other users). It fails with ErrNotInstalled when there is no
// rabbitmq-server. It picks the broker's ports itself and, should the
// broker still fail to start (a port taken meanwhile), tries twice more
// with other ports in a clean dir.
func Start(dir string) (*Broker, error) {
	if _, err := os.Stat("/usr/lib/rabbitmq/bin/rabbitmq-server"); err != nil {
		return nil, ErrNotInstalled
	}
	var err error
	for range 3 {
		var node, dist int
		if node, err = freePort(0); err != nil {
			return nil, err
		}
		if dist, err = freePort(node); err != nil {
			return nil, err
		}
		var url string
		url, err = run([]string{"NODE_PORT=" + strconv.Itoa(node), "DIST_PORT=" + strconv.Itoa(dist)}, "start", dir)
		if err == nil {
			return &Broker{Dir: dir, URL: url}, nil
		}
		_, _ = run(nil, "stop", dir)
		// A clean dir: the script keeps the ports it wrote there.
		if rerr := os.RemoveAll(dir); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		if merr := os.MkdirAll(dir, 0o755); merr != nil {
			return nil, errors.Join(err, merr)
		}
	}
	return nil, err
}

// Stop stops the broker; its durable queues stay in Dir for a later Start.
func (b *Broker) Stop() error {
	_, err := run(nil, "stop", b.Dir)
	return err
}

// Restart starts the broker again in the same directory, on the same URL.
func (b *Broker) Restart() error {
	_, err := run(nil, "start", b.Dir)
	return err
}

// Shared is one broker for a whole test package, started by the first
// test that asks for it (start-up takes seconds), so that a package's
// tests that need no broker — placement, fuzzing, the fake broker — run
// without one. The zero value is ready; Main stops it at the end.
type Shared struct {
	once sync.Once
	b    *Broker
	dir  string
	err  error // why the start failed; every later Get fails with it
}

// Get returns the shared broker, starting it on the first call. It fails
// tb — never skips — when the broker cannot start, naming the install
// command; so does every later call.
func (s *Shared) Get(tb testing.TB) *Broker {
	tb.Helper()
	s.once.Do(func() {
		if s.dir, s.err = os.MkdirTemp("", "chiffon-rabbitmq-"); s.err != nil {
			return
		}
		s.b, s.err = Start(s.dir)
	})
	if s.err != nil {
		tb.Fatalf("this test needs a real RabbitMQ: %v\ninstall it with: %s", s.err, InstallHint)
	}
	return s.b
}

// stop stops the broker if one was started and removes its directory.
func (s *Shared) stop() error {
	var err error
	s.once.Do(func() {}) // no Get after this
	if s.b != nil {
		err = s.b.Stop()
	}
	if s.dir != "" {
		err = errors.Join(err, os.RemoveAll(s.dir))
	}
	return err
}

// Main is for TestMain: it runs the tests, then stops the package's
// shared broker if a test started one.
func Main(m *testing.M, s *Shared) int {
	code := m.Run()
	if err := s.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "dispatchtest: stop broker:", err)
	}
	return code
}

// StartForTest starts a broker of tb's own in a fresh directory (reachable
// by the broker's user, which t.TempDir is not), and stops it and removes
// the directory when tb ends. It fails tb — never skips — when the broker
// cannot start.
func StartForTest(tb testing.TB) *Broker {
	tb.Helper()
	dir, err := os.MkdirTemp("", "chiffon-rabbitmq-")
	if err != nil {
		tb.Fatal(err)
	}
	b, err := Start(dir)
	if err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("this test needs a real RabbitMQ: %v\ninstall it with: %s", err, InstallHint)
	}
	tb.Cleanup(func() {
		if err := b.Stop(); err != nil {
			tb.Log(err)
		}
		os.RemoveAll(dir)
	})
	return b
}
