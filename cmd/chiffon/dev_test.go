package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/internal/logging"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
	"github.com/chiffon-dev/chiffon/node/worker"
)

// testLogWriter sends log lines to t.Log until the test ends (serf may
// log from goroutines that outlive Close; testing panics on a late Log).
func testLogWriter(t *testing.T) *tlogWriter {
	w := &tlogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

type tlogWriter struct {
	t    *testing.T
	mu   sync.Mutex // guards done
	done bool
}

func (w *tlogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// clearDevEnv keeps a developer's CHIFFON_* settings out of the dev command.
func clearDevEnv(t *testing.T) {
	clearHTTPEnv(t)
	for _, k := range []string{"CHIFFON_DATA_DIR", "CHIFFON_BASE_PORT", "CHIFFON_AMQP_URL", "CHIFFON_WORK_HANDLER", "CHIFFON_WORK_HANDLER_MODE",
		"CHIFFON_HEARTBEAT_INTERVAL", "CHIFFON_LOG_LEVEL", "CHIFFON_LOG_JSON"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// startDevCluster starts the dev cluster as `chiffon dev` does, without
// the command around it, and waits until every node is online.
func startDevCluster(t *testing.T, s devSettings) *devCluster {
	t.Helper()
	if s.heartbeat == 0 {
		s.heartbeat = time.Second
	}
	s.logLevel = "info"
	dc := &devCluster{dir: t.TempDir(), s: s, level: slog.LevelInfo, logOut: logging.NewSyncWriter(testLogWriter(t)), done: make(chan struct{})}
	t.Cleanup(func() { dc.stop(nil) })
	if err := dc.start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := dc.waitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return dc
}

// cliArgs are the TLS flags the banner's export gives the CLI.
func (dc *devCluster) cliArgs(t *testing.T) []string {
	t.Helper()
	ca, cert, key, err := dc.sec.cliFiles()
	if err != nil {
		t.Fatal(err)
	}
	return []string{"-tls-ca", ca, "-tls-cert", cert, "-tls-key", key}
}

// httpClient is an HTTPS client with the dev cluster's CLI certificate.
func (dc *devCluster) httpClient(t *testing.T) *http.Client {
	t.Helper()
	ca, cert, key, err := dc.sec.cliFiles()
	if err != nil {
		t.Fatal(err)
	}
	b, err := tlsutil.LoadBundle(ca, cert, key, "")
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = b.ClientConfig("")
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// onlineNames asks an orchestrator's HTTP API for the online agents.
func onlineNames(t *testing.T, hc *http.Client, httpAddr, token string) []string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://"+httpAddr+"/v1/agents?status=online", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var agents []apitype.Agent
	if err := json.NewDecoder(resp.Body).Decode(&agents); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/agents on %s: %d %v", httpAddr, resp.StatusCode, err)
	}
	var names []string
	for _, a := range agents {
		names = append(names, a.Name)
	}
	slices.Sort(names)
	return names
}

func TestDevCommand_RunsClusterAndStopsOnSignal(t *testing.T) {
	clearDevEnv(t)
	ui := cli.NewMockUi()
	sig := make(chan os.Signal, 2)
	readyCh := make(chan *devCluster, 1)
	c := &devCommand{ui: ui, signals: sig, logOut: testLogWriter(t), ready: func(dc *devCluster) { readyCh <- dc }}
	exit := make(chan int, 1)
	begin := time.Now()
	go func() { exit <- c.Run([]string{"-log-level", "info", "-heartbeat-interval", "1s"}) }()

	var dc *devCluster
	select {
	case dc = <-readyCh:
	case code := <-exit:
		t.Fatalf("dev exited %d before it was ready: %s %s", code, ui.OutputWriter.String(), ui.ErrorWriter.String())
	case <-time.After(90 * time.Second):
		t.Fatal("dev not ready after 90 s")
	}
	t.Logf("ready after %s", time.Since(begin).Round(time.Millisecond))
	if strings.Contains(ui.ErrorWriter.String(), "online in the registry") {
		t.Fatalf("dev warned: %s", ui.ErrorWriter.String())
	}

	// Every orchestrator's HTTP API sees all six nodes online.
	want := []string{"local-desktop", "orch-1", "orch-2", "orch-3", "synthetic-gpu-1", "synthetic-gpu-2"}
	for _, o := range dc.orchs() {
		if got := onlineNames(t, dc.httpClient(t), o.n.APIAddr(), ""); !slices.Equal(got, want) {
			t.Errorf("online on %s = %v, want %v", o.spec.name, got, want)
		}
	}

	// The desktops push their tags to the leader over mutual TLS with
	// their client certificates: it took them, and nobody was refused.
	pushes := regexp.MustCompile(`chiffon_telemetry_pushes_total\{result="(\w+)"\} (\d+)`)
	testwait.Until(t, 30*time.Second, "the desktops' telemetry pushes taken by the leader", func() (bool, string) {
		got := map[string]int{}
		for _, o := range dc.orchs() {
			resp, err := dc.httpClient(t).Get("https://" + o.n.APIAddr() + "/metrics")
			if err != nil {
				return false, err.Error()
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, m := range pushes.FindAllStringSubmatch(string(body), -1) {
				n, _ := strconv.Atoi(m[2])
				got[m[1]] += n
			}
		}
		return got["accepted"] >= 3 && got["refused"] == 0 && got["invalid"] == 0, fmt.Sprintf("pushes by result %v", got)
	})

	// Secured: every node's gossip is encrypted, the API refuses plain
	// HTTP, and the serf RPC keeps the key from whoever lacks its token.
	for _, d := range dc.nodes() {
		if !d.n.Gossip().Serf().EncryptionEnabled() {
			t.Errorf("%s: gossip not encrypted", d.spec.name)
		}
	}
	checkPlainHTTPRefused(t, dc.orchs()[0].n.APIAddr())
	rpc := dc.orchs()[0].n.Gossip().RPCAddr()
	if kout, kerr, err := runCmd(serfBinary(t), "keys", "-list", "-rpc-addr", rpc); err == nil || strings.Contains(kout+kerr, dc.sec.key) {
		t.Errorf("serf keys -list without the RPC token: %v\n%s%s", err, kout, kerr)
	}

	// The banner names the addresses, and its commands work.
	out := ui.OutputWriter.String()
	ca, cert, key, _ := dc.sec.cliFiles()
	for _, s := range []string{dc.orchs()[0].n.APIAddr(), dc.orchs()[1].n.APIAddr(), "serf members -rpc-addr=" + rpc,
		"available-capacity?min_gpu_vram_gb=8", "capacity -http-addr ", "https://", "/ui/", "synthetic-gpu-1.json",
		"export CHIFFON_TLS_CA=" + ca + " CHIFFON_TLS_CERT=" + cert + " CHIFFON_TLS_KEY=" + key,
		"--cacert " + ca + " --cert " + cert + " --key " + key} {
		if !strings.Contains(out, s) {
			t.Errorf("banner lacks %q:\n%s", s, out)
		}
	}
	mui := cli.NewMockUi()
	orchDir := filepath.Join(dc.dir, "orch-1")
	if !strings.Contains(out, "members -rpc-addr "+rpc+" -data-dir "+orchDir) {
		t.Errorf("banner's chiffon members lacks -data-dir %s:\n%s", orchDir, out)
	}
	if code, mout, merr := runAPICmd(&membersCommand{ui: mui}, mui, "-rpc-addr", rpc, "-data-dir", orchDir); code != 0 ||
		!strings.Contains(mout, "synthetic-gpu-2") || !strings.Contains(mout, "nvidia") {
		t.Errorf("members -rpc-addr %s -data-dir %s: exit %d: %s %s", rpc, orchDir, code, mout, merr)
	}
	// The banner's serf line, pasted into a shell, gets past the RPC's token.
	serfLine := ""
	for l := range strings.Lines(out) {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "serf members ") {
			serfLine = l
		}
	}
	sh := exec.Command("sh", "-c", serfLine)
	sh.Env = append(childEnv(), "PATH="+filepath.Dir(serfBinary(t))+string(os.PathListSeparator)+os.Getenv("PATH"))
	if sout, err := sh.CombinedOutput(); err != nil || !strings.Contains(string(sout), "synthetic-gpu-2") {
		t.Errorf("banner's %q: %v: %s", serfLine, err, sout)
	}
	cui := cli.NewMockUi()
	if code, cout, cerr := runAPICmd(&capacityCommand{ui: cui}, cui, append(dc.cliArgs(t), "-http-addr", dc.orchs()[1].n.APIAddr(), "-min-gpu-vram-gb", "8")...); code != 0 ||
		!strings.Contains(cout, "synthetic-gpu-1") || !strings.Contains(cout, "synthetic-gpu-2") {
		t.Errorf("capacity: exit %d: %s %s", code, cout, cerr)
	}

	// Ctrl-C: a clean exit within seconds, and the temporary dir is gone.
	stopAt := time.Now()
	sig <- os.Interrupt
	select {
	case code := <-exit:
		took := time.Since(stopAt)
		t.Logf("exit %d %s after the signal", code, took.Round(time.Millisecond))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, ui.ErrorWriter.String())
		}
		if took > 10*time.Second {
			t.Errorf("stopping took %s, want a few seconds", took)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not exit within 30 s of the signal")
	}
	if _, err := os.Stat(dc.dir); !os.IsNotExist(err) {
		t.Errorf("temporary data dir %s left behind: %v", dc.dir, err)
	}
}

func TestDevCommand_BadFlags(t *testing.T) {
	clearDevEnv(t)
	for _, args := range [][]string{{"extra"}, {"-base-port", "80"}, {"-base-port", "65500"}, {"-log-level", "loud"},
		{"-heartbeat-interval", "0s"}, {"-nope"}} {
		ui := cli.NewMockUi()
		if code := (&devCommand{ui: ui, signals: make(chan os.Signal)}).Run(args); code != 2 {
			t.Errorf("dev %q: exit %d, want 2 (%s)", args, code, ui.ErrorWriter.String())
		}
	}
}

// TestDevMetrics_MatchDemoFiles keeps the embedded copies equal to the
// files scripts/cluster.sh uses.
func TestDevMetrics_MatchDemoFiles(t *testing.T) {
	for _, name := range []string{"gpu-desktop-1.json", "gpu-desktop-2.json"} {
		want, err := os.ReadFile("../../scripts/demo/" + name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := devMetrics.ReadFile("devdata/" + name)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("cmd/chiffon/devdata/%s differs from scripts/demo/%s (%v): copy it over", name, name, err)
		}
	}
}

func TestDevHelpers_QuoteAndRedact(t *testing.T) {
	for in, want := range map[string]string{"abc": "abc", "a b": "'a b'", "it's": `'it'\''s'`, "": "''"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"amqp://u:secret@h:5672/": "amqp://u:xxx@h:5672/", "amqp://h/": "amqp://h/"} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDevCommand_WorkThroughRabbitMQ is `make demo AMQP_URL=…` as the
// banner tells a user to try it: the dev cluster with a real broker, in
// each handler mode with its demo handler, then `chiffon submit -wait`
// prints the result and `chiffon work status` shows the item succeeded.
func TestDevCommand_WorkThroughRabbitMQ(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a real RabbitMQ")
	}
	t.Parallel()
	broker := dispatchtest.StartForTest(t)

	for _, tt := range []struct{ mode, output string }{
		{worker.HandlerExec, `ran on synthetic-gpu-[12], GPU [0-9], payload: {"hello":"world"}`},
		{worker.HandlerPersistent, `ran on synthetic-gpu-[12] in a persistent handler, GPU index [0-9]`},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			var s devSettings
			s.options() // the command's defaults
			s.amqpURL, s.handlerMode = broker.URL, tt.mode
			dc := startDevCluster(t, s)
			if banner := dc.banner("chiffon", false); !strings.Contains(banner, "submit -amqp-url") || !strings.Contains(banner, "("+tt.mode+")") {
				t.Errorf("banner lacks the work commands or the mode:\n%s", banner)
			}

			ui := cli.NewMockUi()
			code, out, errOut := runAPICmd(&submitCommand{ui: ui}, ui, "-amqp-url", broker.URL, "-min-gpu-vram-gb", "8",
				"-payload", `{"hello":"world"}`, "-wait", "60s")
			var res struct {
				WorkID  string `json:"work_id"`
				Status  string `json:"status"`
				AgentID string `json:"agent_id"`
				Output  string `json:"output"`
			}
			if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
				t.Fatalf("submit -wait: exit %d: %s %s", code, out, errOut)
			}
			if res.Status != "succeeded" || !regexp.MustCompile(tt.output).MatchString(res.Output) {
				t.Fatalf("result %+v; want succeeded with output matching %q", res, tt.output)
			}
			wui := cli.NewMockUi()
			code, out, errOut = runAPICmd(&workStatusCommand{ui: wui}, wui, append(dc.cliArgs(t), "-http-addr", dc.orchs()[2].n.APIAddr(), res.WorkID)...)
			if code != 0 || !strings.Contains(out, `"status": "succeeded"`) || !strings.Contains(out, res.AgentID) {
				t.Fatalf("work status %s: exit %d: %s %s", res.WorkID, code, out, errOut)
			}
		})
	}
}

// TestDevSecurity_ReusesKeyAndCA: a dev cluster kept with -data-dir comes
// back with the same gossip key and CA; the secrets are 0600.
func TestDevSecurity_ReusesKeyAndCA(t *testing.T) {
	dir := t.TempDir()
	a, err := newDevSecurity(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, cert1, _, err := a.cliFiles()
	if err != nil {
		t.Fatal(err)
	}
	b, err := newDevSecurity(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, cert2, _, err := b.cliFiles()
	if err != nil {
		t.Fatal(err)
	}
	if a.key == "" || a.key != b.key || !a.ca.Cert.Equal(b.ca.Cert) || cert1 != cert2 {
		t.Errorf("second start: key %q vs %q, same CA %t, cert %s vs %s", a.key, b.key, a.ca.Cert.Equal(b.ca.Cert), cert1, cert2)
	}
	_, caKey := tlsutil.CAFileNames(tlsutil.DefaultDomain)
	for _, p := range []string{a.keyFile, filepath.Join(a.dir, caKey)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Error(err)
		} else if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v; want 0600", p, fi.Mode().Perm())
		}
	}
}
