package owner

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"
)

// privateBus is a dbus-daemon of the test's own on a socket in a
// temporary directory.
type privateBus struct {
	Address string
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has been waited for
}

// startBus starts a private dbus-daemon on socket (a new temporary one when
// socket is "") and stops it when t ends. Without dbus-daemon the test
// fails: it comes with Debian's dbus package, which .ci/run installs.
func startBus(t *testing.T, socket string) *privateBus {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Fatalf("cannot start a private D-Bus: dbus-daemon is not on PATH (%v); install Debian's dbus package: apt-get install -y dbus", err)
	}
	if socket == "" {
		// A short directory of its own: a Unix socket path has at most
		// 107 bytes and t.TempDir's names grow with the test's name.
		dir, err := os.MkdirTemp("", "chiffon-dbus-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		socket = filepath.Join(dir, "bus")
	}
	// The package's stock session configuration, on our socket: any
	// client of the same user may own and call any name.
	cmd := exec.Command(daemon, "--session", "--address=unix:path="+socket, "--nofork", "--nopidfile", "--print-address=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start a private D-Bus: %v", err)
	}
	b := &privateBus{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() { // owns stdout until the daemon exits
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			addr <- strings.TrimSpace(sc.Text())
		}
		close(addr)
		for sc.Scan() {
		}
	}()
	t.Cleanup(b.stop)
	// The daemon prints its address once it listens.
	select {
	case a, ok := <-addr:
		if !ok || a == "" {
			b.stop()
			t.Fatalf("cannot start a private D-Bus: dbus-daemon printed no address; stderr: %s", stderr.String())
		}
		b.Address = a
	case <-time.After(30 * time.Second):
		b.stop()
		t.Fatalf("cannot start a private D-Bus: no address from dbus-daemon within 30s; stderr: %s", stderr.String())
	}
	return b
}

// stop kills the daemon and waits for it; it is idempotent.
func (b *privateBus) stop() {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
	close(b.done)
}

// fakeLogind is org.freedesktop.login1 on a private bus: a Manager that
// lists sessions and a Properties object per session.
type fakeLogind struct {
	conn *dbus.Conn

	mu       sync.Mutex // guards sessions and props
	sessions []logindSessionEntry
	props    map[string]*prop.Properties // by session ID
}

// fakeSession is one session the fake lists.
type fakeSession struct {
	id, typ, class  string
	active, idle    bool
	idleSinceMicros uint64
}

// ListSessions is Manager.ListSessions: a(susso).
func (f *fakeLogind) ListSessions() ([]logindSessionEntry, *dbus.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]logindSessionEntry(nil), f.sessions...), nil
}

// startFakeLogind connects to bus, takes logind's name and exports the
// manager and the sessions.
func startFakeLogind(t *testing.T, bus *privateBus, sessions ...fakeSession) *fakeLogind {
	t.Helper()
	conn, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatalf("fake logind: connect to the private bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &fakeLogind{conn: conn, props: map[string]*prop.Properties{}}
	if err := conn.Export(f, logindPath, logindManager); err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions {
		f.add(t, s)
	}
	reply, err := conn.RequestName(logindBusName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("fake logind: RequestName = %v, %v", reply, err)
	}
	return f
}

// add exports s and lists it.
func (f *fakeLogind) add(t *testing.T, s fakeSession) {
	t.Helper()
	path := dbus.ObjectPath("/org/freedesktop/login1/session/_3" + s.id)
	p, err := prop.Export(f.conn, path, prop.Map{logindSession: {
		"Id":            {Value: s.id},
		"Type":          {Value: s.typ},
		"Class":         {Value: s.class},
		"Active":        {Value: s.active},
		"Remote":        {Value: false},
		"IdleHint":      {Value: s.idle},
		"IdleSinceHint": {Value: s.idleSinceMicros},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.props[s.id] = p
	f.sessions = append(f.sessions, logindSessionEntry{ID: s.id, UID: 1000, User: "owner", Seat: "seat0", Path: path})
}

// setIdle changes a session's idle hint, as the desktop environment does.
func (f *fakeLogind) setIdle(id string, idle bool, sinceMicros uint64) {
	f.mu.Lock()
	p := f.props[id]
	f.mu.Unlock()
	p.SetMust(logindSession, "IdleHint", idle)
	p.SetMust(logindSession, "IdleSinceHint", sinceMicros)
}

// vanish lists a session whose object is gone, as when it ends between
// ListSessions and GetAll.
func (f *fakeLogind) vanish(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions = append(f.sessions, logindSessionEntry{ID: id, Path: dbus.ObjectPath("/org/freedesktop/login1/session/gone" + id)})
}

func newTestLogind(t *testing.T, addr string, now time.Time) *Logind {
	l := NewLogind(LogindConfig{Address: addr, Now: func() time.Time { return now }})
	t.Cleanup(func() { l.Close() })
	return l
}

// testCtx bounds a call on the private bus, so that a wedged one fails the
// test instead of hanging it.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func micros(t time.Time) uint64 { return uint64(t.UnixMicro()) }

func TestLogind_ActiveGraphicalSession(t *testing.T) {
	now := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	bus := startBus(t, "")
	fake := startFakeLogind(t, bus,
		fakeSession{id: "1", typ: "tty", class: "user", active: true, idle: true, idleSinceMicros: micros(now.Add(-time.Hour))},
		fakeSession{id: "2", typ: "wayland", class: "user", active: true, idle: false, idleSinceMicros: micros(now.Add(-time.Hour))},
	)
	fake.vanish("3")
	l := newTestLogind(t, bus.Address, now)

	r, err := l.Read(testCtx(t))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if r.Source != "logind" || r.Idle != 0 || !r.LastInput.Equal(now) || r.Declared != "" {
		t.Fatalf("Read with an active wayland session = %+v, want active (Idle 0) as of now", r)
	}

	// The desktop environment marks the session idle: the same connection
	// reads the new hint.
	fake.setIdle("2", true, micros(now.Add(-12*time.Minute)))
	r, err = l.Read(testCtx(t))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if r.Idle != 12*time.Minute || !r.LastInput.Equal(now.Add(-12*time.Minute)) {
		t.Fatalf("Read after the session went idle 12m ago = %+v, want Idle 12m", r)
	}
}

func TestLogind_AllIdleTakesTheMostRecent(t *testing.T) {
	now := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	bus := startBus(t, "")
	startFakeLogind(t, bus,
		fakeSession{id: "4", typ: "x11", class: "user", active: true, idle: true, idleSinceMicros: micros(now.Add(-time.Hour))},
		fakeSession{id: "5", typ: "wayland", class: "user", active: true, idle: true, idleSinceMicros: micros(now.Add(-20 * time.Minute))},
		// Sessions that do not count, however recent: not graphical, in the
		// background, a display manager's greeter.
		fakeSession{id: "6", typ: "tty", class: "user", active: true, idle: false},
		fakeSession{id: "7", typ: "x11", class: "user", active: false, idle: false},
		fakeSession{id: "c1", typ: "wayland", class: "greeter", active: true, idle: false},
	)
	r, err := newTestLogind(t, bus.Address, now).Read(testCtx(t))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if r.Idle != 20*time.Minute {
		t.Fatalf("Read = %+v, want Idle 20m (the most recently idle graphical session)", r)
	}
}

func TestLogind_NoGraphicalSessionIsNoData(t *testing.T) {
	bus := startBus(t, "")
	startFakeLogind(t, bus,
		fakeSession{id: "8", typ: "tty", class: "user", active: true},
		fakeSession{id: "c1", typ: "x11", class: "greeter", active: true},
	)
	_, err := newTestLogind(t, bus.Address, time.Now()).Read(testCtx(t))
	if !errors.Is(err, ErrNoData) {
		t.Fatalf("Read = %v, want ErrNoData", err)
	}
}

func TestLogind_NotOnTheBusIsNoData(t *testing.T) {
	bus := startBus(t, "")
	_, err := newTestLogind(t, bus.Address, time.Now()).Read(testCtx(t))
	if !errors.Is(err, ErrNoData) {
		t.Fatalf("Read on a bus without logind = %v, want ErrNoData", err)
	}
}

// A bus that restarts (a dbus upgrade) costs one failed Read; the next
// connects again.
func TestLogind_ReconnectsAfterTheBusRestarts(t *testing.T) {
	now := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	session := fakeSession{id: "9", typ: "x11", class: "user", active: true, idle: true, idleSinceMicros: micros(now.Add(-time.Minute))}
	bus := startBus(t, "")
	startFakeLogind(t, bus, session)
	l := newTestLogind(t, bus.Address, now)
	if _, err := l.Read(testCtx(t)); err != nil {
		t.Fatalf("Read: %v", err)
	}

	bus.stop()
	socket := strings.TrimPrefix(strings.SplitN(bus.Address, ",", 2)[0], "unix:path=")
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	// Whether the first Read sees the lost connection or the closed one,
	// it fails, and it never answers from the old bus.
	if r, err := l.Read(testCtx(t)); err == nil {
		t.Fatalf("Read with the bus down = %+v, want an error", r)
	}
	bus2 := startBus(t, socket)
	startFakeLogind(t, bus2, session)
	var r Reading
	var err error
	for range 2 { // at most the one failed Read that notices the lost connection
		if r, err = l.Read(testCtx(t)); err == nil {
			break
		}
	}
	if err != nil || r.Idle != time.Minute {
		t.Fatalf("Read after the bus came back = %+v, %v; want Idle 1m", r, err)
	}
}

func TestLogind_ReadAfterClose(t *testing.T) {
	bus := startBus(t, "")
	l := NewLogind(LogindConfig{Address: bus.Address})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Read(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close = %v, want ErrClosed", err)
	}
}

// A bus that takes the connection and never answers costs a Read no more
// than its context allows.
func TestLogind_ConnectWaitsNoLongerThanTheContext(t *testing.T) {
	dir, err := os.MkdirTemp("", "chiffon-dbus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "mute"))
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 1)
	go func() { // owned by the test: ends when ln is closed
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c // keep it open, say nothing
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		select {
		case c := <-held:
			c.Close()
		default:
		}
	})

	l := newTestLogind(t, "unix:path="+filepath.Join(dir, "mute"), time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := l.Read(ctx)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Read against a mute bus = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Read against a mute bus still blocked 30s after its 300ms context ended")
	}
}
