package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
)

// TestScripts_DemoStopKillAndSIGTERM runs scripts/demo.sh as a user would,
// makes one desktop go away with `cluster.sh kill` (suspect) and another
// with `cluster.sh stop` (left), and ends the demo with SIGTERM, which it
// used to ignore while it slept.
func TestScripts_DemoStopKillAndSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Fixed ports BASE..BASE+305 on 127.0.0.1, below the ephemeral range
	// so that no port-0 listener of another test takes one first.
	base := 20000 + rand.IntN(11000)
	env := childEnv("BIN="+chiffonBinary(t), "CLUSTER_DIR="+dir, fmt.Sprintf("BASE_PORT=%d", base))
	var out testlog.Buffer
	demo := exec.Command("bash", filepath.Join(root, "scripts", "demo.sh"))
	demo.Env, demo.Stdout, demo.Stderr = env, &out, &out
	demo.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- demo.Wait() }()
	t.Cleanup(func() {
		// Whatever happened, leave no node behind.
		_ = syscall.Kill(-demo.Process.Pid, syscall.SIGKILL)
		cl := exec.Command("bash", filepath.Join(root, "scripts", "cluster.sh"), "down")
		cl.Env = env
		_ = cl.Run()
		if t.Failed() {
			t.Logf("demo.sh output:\n%s", out.String())
		}
	})
	waitFor(t, 60*time.Second, "the demo banner", func() (bool, string) {
		select {
		case err := <-exited:
			t.Fatalf("demo.sh exited early: %v", err)
		default:
		}
		return strings.Contains(out.String(), "Press Ctrl-C to stop."), "no banner yet"
	})
	for _, word := range []string{"cluster.sh kill desk-gpu-2", "cluster.sh stop desk-gpu-1"} {
		if !strings.Contains(out.String(), word) {
			t.Errorf("banner does not say %q", word)
		}
	}

	cluster := func(args ...string) string {
		c := exec.Command("bash", append([]string{filepath.Join(root, "scripts", "cluster.sh")}, args...)...)
		c.Env = env
		b, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("cluster.sh %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return string(b)
	}
	pid := func(name string) int {
		b, err := os.ReadFile(filepath.Join(dir, name+".pid"))
		if err != nil {
			t.Fatal(err)
		}
		var p int
		fmt.Sscan(string(b), &p)
		return p
	}
	killed, stopped := pid("desk-gpu-2"), pid("desk-gpu-1")
	cluster("kill", "desk-gpu-2")
	cluster("stop", "desk-gpu-1")
	for _, p := range []int{killed, stopped} {
		if syscall.Kill(p, 0) == nil {
			t.Errorf("pid %d still runs after cluster.sh kill/stop", p)
		}
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", base+300)
	// The cluster came up secured: HTTPS with the CLI's client
	// certificate from cluster.sh's own CA, nothing over plain HTTP, an
	// encrypted gossip whose key the serf RPC keeps to its token holders.
	hc := clusterClient(t, dir)
	checkPlainHTTPRefused(t, httpAddr)
	key, err := os.ReadFile(filepath.Join(dir, "gossip.key"))
	if err != nil || len(strings.TrimSpace(string(key))) == 0 {
		t.Fatalf("cluster.sh made no gossip key: %v", err)
	}
	serf := serfBinary(t)
	rpc := fmt.Sprintf("127.0.0.1:%d", base+100)
	if out, errOut, err := runCmd(serf, "keys", "-list", "-rpc-addr", rpc); err == nil || strings.Contains(out+errOut, strings.TrimSpace(string(key))) {
		t.Errorf("serf keys -list without the RPC token: %v\n%s%s", err, out, errOut)
	}
	for _, name := range []string{"orch-1", "desk-host"} {
		if b, _ := os.ReadFile(filepath.Join(dir, name+".log")); !strings.Contains(string(b), "encrypted=true") || strings.Contains(string(b), "without protection") {
			t.Errorf("%s's log does not say its gossip is encrypted, or warns:\n%s", name, tail(string(b), 20))
		}
	}
	// serf's leave is best effort: on a busy machine the leader may hear
	// desk-gpu-1 fall silent before its leave intent and show it suspect
	// until the next push-pull sync brings the intent (30 s, README's
	// liveness table); so the bound is that interval and a margin.
	waitFor(t, 60*time.Second, "desk-gpu-2 suspect and desk-gpu-1 left", func() (bool, string) {
		var list []agentView
		resp, err := hc.Get("https://" + httpAddr + "/agents?stale")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			return false, err.Error()
		}
		a := map[string]string{}
		for _, v := range list {
			a[v.Name] = v.Status
		}
		return a["desk-gpu-2"] == "suspect" && a["desk-gpu-1"] == "left", fmt.Sprint(a)
	})

	if err := syscall.Kill(demo.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("demo.sh still runs 30 s after SIGTERM")
	}
	if !strings.Contains(out.String(), "stopping (graceful leave)") {
		t.Errorf("demo.sh did not stop the cluster on SIGTERM")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster dir %s still there after the demo stopped: %v", dir, err)
	}
}

// clusterClient is an HTTPS client with the CLI certificate that
// scripts/cluster.sh made in dir, as its `env` command hands it to chiffon.
func clusterClient(t *testing.T, dir string) *http.Client {
	t.Helper()
	tlsDir := filepath.Join(dir, "tls")
	b, err := tlsutil.LoadBundle(filepath.Join(tlsDir, "chiffon-agent-ca.pem"),
		filepath.Join(tlsDir, "chiffon-client-cli.pem"), filepath.Join(tlsDir, "chiffon-client-cli-key.pem"), "")
	if err != nil {
		t.Fatalf("cluster.sh's TLS material: %v", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = b.ClientConfig("") // the URL's 127.0.0.1 is in every certificate
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// TestRabbitMQScript_URLWithoutTrailingSlash: the URL the broker script
// prints has no trailing "/", which amqp-tools read as the empty vhost.
func TestRabbitMQScript_URLWithoutTrailingSlash(t *testing.T) {
	if _, err := os.Stat("/usr/lib/rabbitmq/bin/rabbitmq-server"); err != nil {
		t.Fatalf("%v (%s)", err, dispatchtest.InstallHint)
	}
	dir := t.TempDir() // a broker directory as a first start leaves it
	env := "NODE_PORT=25672\nDIST_PORT=25673\nNODENAME=chiffon-test@localhost\n"
	if err := os.WriteFile(filepath.Join(dir, "env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ bindIP, want string }{
		{"", "amqp://guest:guest@127.0.0.1:25672"},
		// The fault lab's broker listens on its namespace's bridge.
		{"10.200.0.1", "amqp://guest:guest@10.200.0.1:25672"},
	} {
		c := exec.Command("bash", "../../scripts/rabbitmq.sh", "url", dir)
		c.Env = append(os.Environ(), "BIND_IP="+tt.bindIP)
		b, err := c.Output()
		url := strings.TrimSpace(string(b))
		if err != nil || url != tt.want {
			t.Errorf("BIND_IP=%q: rabbitmq.sh url = %q, %v; want %q", tt.bindIP, url, err, tt.want)
		}
	}
}
