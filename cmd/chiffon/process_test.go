package main

// Multi-process tests: the real chiffon binary, several nodes on loopback
// (127.0.0.1 .. 127.0.0.4, all of 127/8 is loopback on Linux), real
// sockets, and the stock serf CLI talking to each node's serf RPC. They
// check what an operator sees, not what a Go API returns.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// Scaled SWIM and heartbeat timings so that failure detection, leaves and
// tag changes happen in seconds rather than minutes.
var fastTimings = []string{
	"-heartbeat-interval", "500ms",
	"-probe-interval", "200ms",
	"-probe-timeout", "100ms",
	"-gossip-interval", "50ms",
	"-suspicion-mult", "2",
}

// pollEvery is how often a poll loop re-checks its condition.
const pollEvery = 100 * time.Millisecond

// binDir holds the chiffon binary built for this test run; TestMain removes
// it. The build itself is lazy (buildOnce) so that `go test -run Other`
// does not pay for it.
var (
	binDir    string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chiffon-process-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "process tests: temp dir:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// chiffonBinary builds ./cmd/chiffon once (cgo on, as released) and returns
// its path.
func chiffonBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		out := filepath.Join(binDir, "chiffon")
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if os.Getenv("CGO_CFLAGS") == "" {
			cmd.Env = append(cmd.Env, "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
		}
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/chiffon: %v\n%s", err, b)
			return
		}
		binPath = out
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// serfBinary finds the stock serf CLI on PATH or in $(go env GOPATH)/bin.
// A missing CLI fails the test: these tests exist to prove the stock CLI
// works, so skipping would hide a broken CI image.
func serfBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("serf"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		for gp := range strings.SplitSeq(strings.TrimSpace(string(out)), string(os.PathListSeparator)) {
			p := filepath.Join(gp, "bin", "serf")
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p
			}
		}
	}
	t.Fatalf("the stock serf CLI is not on PATH nor in $(go env GOPATH)/bin; install it with:\n" +
		"  go install github.com/hashicorp/serf/cmd/serf@v0.11.0")
	return ""
}

// childEnv is the test's environment without any CHIFFON_* variable (so a
// developer's shell cannot change what the nodes do), plus extra.
func childEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "CHIFFON_") })
	return append(env, extra...)
}

// freeGossipPort returns a port on ip that is free for both TCP and UDP,
// as memberlist binds both.
func freeGossipPort(t *testing.T, ip string) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("listen tcp on %s: %v", ip, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		ln.Close()
		if err == nil {
			pc.Close()
			if claimPort(port) {
				return port
			}
		}
	}
	t.Fatalf("no port on %s is free for both TCP and UDP", ip)
	return 0
}

// freeTCPPort returns a free TCP port on ip.
func freeTCPPort(t *testing.T, ip string) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("listen tcp on %s: %v", ip, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if claimPort(port) {
			return port
		}
	}
	t.Fatalf("no free TCP port on %s that this run has not handed out", ip)
	return 0
}

// handedOut holds every port the free*Port helpers returned in this run:
// the kernel may give a just-closed port again at once, and one node once
// got the same port for -rpc-addr and -http-addr (bind: address in use).
var handedOut sync.Map // int → struct{}

// claimPort reports whether port was not handed out before, and claims it.
func claimPort(port int) bool {
	_, taken := handedOut.LoadOrStore(port, struct{}{})
	return !taken
}

// nodeSpec is how to run one node; it survives restarts of the process.
type nodeSpec struct {
	name        string
	gossipAddr  string
	rpcAddr     string
	dataDir     string
	metricsFile string // "" samples the host
	// secure are the gossip key and TLS flags (secured by default: the
	// run's key and a client certificate; newOrchSpec a server one). They
	// come before args, so a test's own -encrypt or -tls-* wins.
	secure []string
	args   []string
	env    []string
}

// newNodeSpec picks free ports on ip and a fresh data dir.
func newNodeSpec(t *testing.T, name, ip string) *nodeSpec {
	t.Helper()
	return &nodeSpec{
		name:       name,
		gossipAddr: net.JoinHostPort(ip, strconv.Itoa(freeGossipPort(t, ip))),
		rpcAddr:    net.JoinHostPort(ip, strconv.Itoa(freeTCPPort(t, ip))),
		dataDir:    t.TempDir(),
		secure:     append([]string{"-encrypt", testGossipKey}, pki(t).clientArgs(t, name)...),
	}
}

func (s *nodeSpec) argv() []string {
	// -owner-idle 0: a desktop that watched its owner would read this
	// machine's logind session or terminals, where anyone's typing makes
	// the owner "active"; tests of the owner policy turn it on in args.
	a := []string{"agent", "-node", s.name, "-data-dir", s.dataDir, "-bind", s.gossipAddr,
		"-rpc-addr", s.rpcAddr, "-log-level", "info", "-owner-idle", "0"}
	if s.metricsFile != "" {
		a = append(a, "-metrics-file", s.metricsFile)
	}
	return append(append(a, s.secure...), s.args...)
}

// proc is one running chiffon process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once the process has exited
	// code is the exit code (-1 if killed by a signal); read it after done.
	code int
}

// startChiffon starts the binary with args, its stdout and stderr going to
// a log file under dir. The process is killed at cleanup, and its log is
// written to t.Log if the test failed.
func startChiffon(t *testing.T, name string, args, env []string) *proc {
	t.Helper()
	return startBinary(t, chiffonBinary(t), name, args, env)
}

// startBinary is startChiffon with another chiffon binary (a previous
// release's, for the upgrade test).
func startBinary(t *testing.T, bin, name string, args, env []string) *proc {
	t.Helper()
	logDir := t.TempDir()
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv(env...)
	cmd.Stdout, cmd.Stderr = f, f
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.code = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		<-p.done
		if t.Failed() {
			t.Logf("---- log of %s (%s), exit code %d ----\n%s", name, strings.Join(args, " "), p.code, tail(p.logText(), 150))
		}
	})
	return p
}

// start runs a node from its spec.
func (s *nodeSpec) start(t *testing.T) *proc {
	t.Helper()
	return startChiffon(t, s.name, s.argv(), s.env)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
}

// waitExit waits for the process to exit and returns its exit code.
func (p *proc) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(within):
		t.Fatalf("%s did not exit within %s", p.name, within)
		return 0
	}
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = append([]string{fmt.Sprintf("[... %d lines before]", len(l)-lines)}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n")
}

// waitFor polls cond until it reports true or the deadline passes; cond
// returns a description of what it saw, used in the failure message.
func waitFor(t *testing.T, within time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	return testwait.Every(t, pollEvery, within, what, cond)
}

// waitReady waits until the node has logged "node started" (it is then
// gossiping and serving RPC) and fails fast if it exits instead.
func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, 15*time.Second, p.name+` to log "node started"`, func() (bool, string) {
		if p.exited() {
			t.Fatalf("%s exited with code %d before it started:\n%s", p.name, p.code, tail(p.logText(), 40))
		}
		return strings.Contains(p.logText(), `msg="node started"`), "no such line yet"
	})
}

// runCmd runs a short-lived command and returns its stdout, stderr and
// error. It never takes longer than 15 s.
func runCmd(bin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// serfMember is one entry of `serf members -format json`.
type serfMember struct {
	Name   string            `json:"name"`
	Addr   string            `json:"addr"`
	Tags   map[string]string `json:"tags"`
	Status string            `json:"status"`
}

// rpcArgs are the flags that point the stock serf CLI at the node's RPC:
// its address and the token the node keeps in its data dir (read at each
// call, since the node creates it at its first start). Without a readable
// token they leave -rpc-auth out, so the CLI's refusal shows in the test.
func (s *nodeSpec) rpcArgs() []string {
	a := []string{"-rpc-addr", s.rpcAddr}
	if key, err := gossip.ReadRPCAuthKey(s.dataDir); err == nil {
		a = append(a, "-rpc-auth", key)
	}
	return a
}

// serfCmd runs the stock `serf SUB` against the node's RPC with args.
func serfCmd(serf string, s *nodeSpec, sub string, args ...string) (stdout, stderr string, err error) {
	return runCmd(serf, append(append([]string{sub}, s.rpcArgs()...), args...)...)
}

// serfMembers runs the stock `serf members -format json` against the
// node's RPC with extra filter flags, and returns the members by name.
func serfMembers(serf string, s *nodeSpec, extra ...string) (map[string]serfMember, error) {
	args := append([]string{"-format", "json"}, extra...)
	out, errOut, err := serfCmd(serf, s, "members", args...)
	if err != nil {
		return nil, fmt.Errorf("serf members -rpc-addr %s %s: %v: %s", s.rpcAddr, strings.Join(args, " "), err, errOut)
	}
	var resp struct {
		Members []serfMember `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		return nil, fmt.Errorf("serf members output is not JSON: %v: %q", err, out)
	}
	m := make(map[string]serfMember, len(resp.Members))
	for _, x := range resp.Members {
		m[x.Name] = x
	}
	return m, nil
}

// statuses renders members as "name=status" for failure messages.
func statuses(m map[string]serfMember) string {
	var s []string
	for n, x := range m {
		s = append(s, n+"="+x.Status)
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}

// waitStatus waits until the serf CLI against the node's RPC shows node
// with the given status, and returns that member.
func waitStatus(t *testing.T, serf string, s *nodeSpec, node, status string, within time.Duration) serfMember {
	t.Helper()
	var got serfMember
	waitFor(t, within, fmt.Sprintf("serf at %s to show %s %s", s.name, node, status), func() (bool, string) {
		m, err := serfMembers(serf, s)
		if err != nil {
			return false, err.Error()
		}
		got = m[node]
		return got.Status == status, statuses(m)
	})
	return got
}

// writeFileAtomic writes data to path through a temp file and a rename, so
// a heartbeat never reads half a file.
func writeFileAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// gpuJSON is one GPU in a metrics file.
type gpuJSON struct {
	Index int     `json:"index"`
	Name  string  `json:"name"`
	Total float64 `json:"vram_total_gb"`
	Free  float64 `json:"vram_free_gb"`
	Util  float64 `json:"utilization_pct"`
}

// metricsJSON renders a metrics file for a desktop.
func metricsJSON(t *testing.T, load1 float64, cores int, memGB float64, gpuType string, gpus ...gpuJSON) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"cpu_load_1min": load1, "cpu_load_5min": load1, "cpu_load_15min": load1,
		"cpu_cores_physical": cores, "memory_percent": 35.5, "memory_available_gb": memGB,
		"gpu_type": gpuType, "gpus": gpus,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withMetrics gives the node a metrics file with data.
func (s *nodeSpec) withMetrics(t *testing.T, data []byte) *nodeSpec {
	t.Helper()
	s.metricsFile = filepath.Join(t.TempDir(), s.name+"-metrics.json")
	writeFileAtomic(t, s.metricsFile, data)
	return s
}

// TestProcess_SeedAndDesktops_SerfCLI runs a seed and three desktops with
// different GPUs and checks, with the stock serf CLI, membership, tag
// filters, heartbeat propagation, operator tags, failure and leave.
func TestProcess_SeedAndDesktops_SerfCLI(t *testing.T) {
	serf := serfBinary(t)
	bin := chiffonBinary(t)

	seed := newNodeSpec(t, "seed", "127.0.0.1").withMetrics(t, metricsJSON(t, 0.2, 4, 7.5, "none"))
	seed.args = fastTimings
	nv := newNodeSpec(t, "desk-nvidia", "127.0.0.2").withMetrics(t,
		metricsJSON(t, 1.5, 16, 48, "nvidia", gpuJSON{0, "NVIDIA GeForce RTX 4090", 24, 20, 3}))
	amd := newNodeSpec(t, "desk-amd", "127.0.0.3").withMetrics(t,
		metricsJSON(t, 0.5, 8, 20.5, "amd", gpuJSON{0, "AMD Radeon RX 7800 XT", 16, 12.5, 0}))
	var eight []gpuJSON
	for i := range 8 {
		eight = append(eight, gpuJSON{i, "Intel Data Center GPU Max 1100", 48, 40 - float64(i), 10})
	}
	big := newNodeSpec(t, "desk-8gpu", "127.0.0.4").withMetrics(t, metricsJSON(t, 3, 64, 200, "intel", eight...))
	desktops := []*nodeSpec{nv, amd, big}
	join := append([]string{"-join", seed.gossipAddr}, fastTimings...)
	for _, d := range desktops {
		d.args = join
	}

	procs := map[string]*proc{}
	procs[seed.name] = seed.start(t)
	procs[seed.name].waitReady(t)
	for _, d := range desktops {
		procs[d.name] = d.start(t)
	}
	for _, d := range desktops {
		procs[d.name].waitReady(t)
	}

	// (a) The stock CLI lists all four alive, with their tags.
	wantGPU := map[string]string{seed.name: "none", nv.name: "nvidia", amd.name: "amd", big.name: "intel"}
	var members map[string]serfMember
	waitFor(t, 10*time.Second, "all four members alive on the seed", func() (bool, string) {
		var err error
		if members, err = serfMembers(serf, seed); err != nil {
			return false, err.Error()
		}
		for n := range wantGPU {
			if members[n].Status != "alive" {
				return false, statuses(members)
			}
		}
		return len(members) == 4, statuses(members)
	})
	for n, gt := range wantGPU {
		if got := members[n].Tags["gpu_type"]; got != gt {
			t.Errorf("%s: gpu_type tag = %q, want %q (tags %v)", n, got, gt, members[n].Tags)
		}
		if got := members[n].Tags["role"]; got != "desktop" {
			t.Errorf("%s: role tag = %q, want desktop", n, got)
		}
		if members[n].Tags["id"] == "" || members[n].Tags["cv"] != "1" {
			t.Errorf("%s: want an id tag and cv=1, got %v", n, members[n].Tags)
		}
	}
	if got, want := members[nv.name].Tags["vram"], "24/20/20/1"; got != want {
		t.Errorf("%s: vram tag = %q, want %q (total/avail/maxFreeOneGPU/count)", nv.name, got, want)
	}
	if got, want := members[big.name].Tags["vram"], "384/292/40/8"; got != want {
		t.Errorf("%s: vram tag = %q, want %q", big.name, got, want)
	}
	if got, want := members[nv.name].Tags["cpu"], "1.5/1.5/1.5/16/14.5"; got != want {
		t.Errorf("%s: cpu tag = %q, want %q", nv.name, got, want)
	}

	// (b) The stock tag filter finds exactly the NVIDIA desktop.
	nvOnly, err := serfMembers(serf, seed, "-tag", "gpu_type=nvidia")
	if err != nil {
		t.Fatal(err)
	}
	if len(nvOnly) != 1 || nvOnly[nv.name].Name != nv.name {
		t.Errorf("serf members -tag gpu_type=nvidia = %s, want only %s", statuses(nvOnly), nv.name)
	}

	// (c) The detailed table works and names everyone.
	out, errOut, err := serfCmd(serf, seed, "members", "-detailed")
	if err != nil {
		t.Fatalf("serf members -detailed: %v: %s", err, errOut)
	}
	for n := range wantGPU {
		if !strings.Contains(out, n) {
			t.Errorf("serf members -detailed does not list %s:\n%s", n, out)
		}
	}
	if !strings.Contains(out, "Protocol Version") {
		t.Errorf("serf members -detailed shows no protocol details:\n%s", out)
	}

	// (d) A metrics-file change on one desktop reaches another node's RPC
	// within about one heartbeat plus gossip.
	writeFileAtomic(t, nv.metricsFile, metricsJSON(t, 1.5, 16, 48, "nvidia",
		gpuJSON{0, "NVIDIA GeForce RTX 4090", 24, 6.5, 97}))
	took := waitFor(t, 4*time.Second, "the new vram of "+nv.name+" in `serf members -detailed` on "+amd.name, func() (bool, string) {
		out, errOut, err := serfCmd(serf, amd, "members", "-detailed")
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, errOut)
		}
		for line := range strings.SplitSeq(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), nv.name+" ") {
				return strings.Contains(line, "vram=24/6.5/6.5/1") && strings.Contains(line, "gpus=6.5:97"), line
			}
		}
		return false, out
	})
	t.Logf("metrics-file change visible on another node after %s (heartbeat 500ms)", took.Round(time.Millisecond))

	// (e) An operator tag survives heartbeats: they merge into the tags
	// instead of replacing them. Two metrics changes force two tag updates
	// by the heartbeat; each must keep rack=b2.
	if out, errOut, err := serfCmd(serf, amd, "tags", "-set", "rack=b2"); err != nil {
		t.Fatalf("serf tags -set rack=b2: %v: %s%s", err, out, errOut)
	}
	for i, free := range []float64{11, 9.5} {
		writeFileAtomic(t, amd.metricsFile, metricsJSON(t, 0.5, 8, 20.5, "amd", gpuJSON{0, "AMD Radeon RX 7800 XT", 16, free, 50}))
		want := fmt.Sprintf("16/%g/%g/1", free, free)
		var last serfMember
		waitFor(t, 5*time.Second, fmt.Sprintf("heartbeat %d of %s (vram=%s) on the seed", i+1, amd.name, want), func() (bool, string) {
			m, err := serfMembers(serf, seed)
			if err != nil {
				return false, err.Error()
			}
			last = m[amd.name]
			return last.Tags["vram"] == want, fmt.Sprint(last.Tags)
		})
		if last.Tags["rack"] != "b2" {
			t.Fatalf("after heartbeat %d the operator tag rack=b2 is gone: %v", i+1, last.Tags)
		}
	}

	// (f) chiffon members decodes the tags into resources; the node's data
	// dir gives it the RPC token.
	out, errOut, err = runCmd(bin, "members", "-rpc-addr", big.rpcAddr, "-data-dir", big.dataDir, "-format", "json")
	if err != nil {
		t.Fatalf("chiffon members: %v: %s", err, errOut)
	}
	var views []memberView
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("chiffon members -format json: %v\n%s", err, out)
	}
	byName := map[string]memberView{}
	for _, v := range views {
		byName[v.Name] = v
	}
	if len(byName) != 4 {
		t.Errorf("chiffon members lists %d members, want 4:\n%s", len(byName), out)
	}
	if v := byName[big.name]; v.Resources == nil || v.GPUCount != 8 || len(v.Resources.GPUs) != 8 ||
		v.Resources.GPUType != "intel" || v.Resources.GPUVRAMTotalGB != 384 || v.MaxFree != 40 ||
		v.Resources.CPUCoresPhysical != 64 || v.Resources.MemoryAvailableGB != 200 ||
		v.Resources.GPUs[7].Name != "Intel Data Center GPU Max 1100" || v.Resources.GPUs[7].VRAMFreeGB != 33 {
		t.Errorf("chiffon members: %s decoded wrong: %+v", big.name, v)
	}
	if v := byName[amd.name]; v.Resources == nil || v.Resources.GPUType != "amd" || v.Tags["rack"] != "b2" ||
		v.Resources.GPUVRAMAvailableGB != 9.5 {
		t.Errorf("chiffon members: %s decoded wrong: %+v", amd.name, v)
	}

	// (g) kill -9: the seed's SWIM failure detector marks the node failed.
	start := time.Now()
	procs[big.name].kill()
	waitStatus(t, serf, seed, big.name, "failed", 15*time.Second)
	took = time.Since(start)
	t.Logf("kill -9 of %s seen as failed by the seed after %s", big.name, took.Round(time.Millisecond))

	// (h) SIGTERM: a graceful leave, exit 0, and the seed says "left".
	start = time.Now()
	procs[nv.name].signal(t, syscall.SIGTERM)
	if code := procs[nv.name].waitExit(t, 8*time.Second); code != 0 {
		t.Fatalf("%s exited %d after SIGTERM, want 0", nv.name, code)
	}
	t.Logf("%s exited 0 %s after SIGTERM", nv.name, time.Since(start).Round(time.Millisecond))
	waitStatus(t, serf, seed, nv.name, "left", 5*time.Second)
}

// TestProcess_RestartRejoinsWithoutFlags stops a desktop gracefully and
// starts it again from the same data dir without -join: serf's snapshot
// (with RejoinAfterLeave) brings it back into the cluster.
func TestProcess_RestartRejoinsWithoutFlags(t *testing.T) {
	serf := serfBinary(t)
	seed := newNodeSpec(t, "seed", "127.0.0.1").withMetrics(t, metricsJSON(t, 0.1, 4, 8, "none"))
	seed.args = fastTimings
	desk := newNodeSpec(t, "desk", "127.0.0.2").withMetrics(t,
		metricsJSON(t, 0.4, 8, 16, "nvidia", gpuJSON{0, "NVIDIA RTX A4000", 16, 15, 0}))
	desk.args = append([]string{"-join", seed.gossipAddr}, fastTimings...)

	s := seed.start(t)
	s.waitReady(t)
	d := desk.start(t)
	d.waitReady(t)
	waitStatus(t, serf, seed, desk.name, "alive", 10*time.Second)

	d.signal(t, syscall.SIGTERM)
	if code := d.waitExit(t, 8*time.Second); code != 0 {
		t.Fatalf("desk exited %d after SIGTERM, want 0", code)
	}
	waitStatus(t, serf, seed, desk.name, "left", 5*time.Second)

	desk.args = fastTimings // same data dir, ports and name; no -join
	d2 := desk.start(t)
	d2.waitReady(t)
	m := waitStatus(t, serf, seed, desk.name, "alive", 10*time.Second)
	if m.Tags["gpu_type"] != "nvidia" {
		t.Errorf("rejoined desk has tags %v, want gpu_type=nvidia", m.Tags)
	}
	// And the desk itself sees the seed again.
	waitStatus(t, serf, desk, seed.name, "alive", 5*time.Second)
}

// TestProcess_EncryptKeyMismatch checks gossip encryption end to end: a
// wrong key cannot join, the right key can, and the keyring persisted in
// the data dir keeps a restarted node encrypted without -encrypt.
func TestProcess_EncryptKeyMismatch(t *testing.T) {
	serf := serfBinary(t)
	bin := chiffonBinary(t)
	keygen := func() string {
		out, errOut, err := runCmd(bin, "keygen")
		if err != nil {
			t.Fatalf("chiffon keygen: %v: %s", err, errOut)
		}
		return strings.TrimSpace(out)
	}
	k1, k2 := keygen(), keygen()
	if k1 == k2 {
		t.Fatalf("chiffon keygen printed the same key twice: %s", k1)
	}

	seed := newNodeSpec(t, "seed", "127.0.0.1").withMetrics(t, metricsJSON(t, 0.1, 4, 8, "none"))
	seed.args = append([]string{"-encrypt", k1}, fastTimings...)
	s := seed.start(t)
	s.waitReady(t)

	// A wrong key: -join fails fast with a clear message.
	bad := newNodeSpec(t, "wrong-key", "127.0.0.2").withMetrics(t, metricsJSON(t, 0.1, 4, 8, "none"))
	bad.args = append([]string{"-encrypt", k2, "-join", seed.gossipAddr}, fastTimings...)
	start := time.Now()
	b := bad.start(t)
	if code := b.waitExit(t, 10*time.Second); code == 0 {
		t.Fatalf("a node with the wrong key exited 0; want a failed join:\n%s", b.logText())
	}
	t.Logf("wrong-key node gave up after %s", time.Since(start).Round(time.Millisecond))
	if log := b.logText(); !strings.Contains(log, "no join address answered") || !strings.Contains(log, seed.gossipAddr) {
		t.Errorf("the wrong-key node's log does not say which join failed:\n%s", tail(log, 20))
	}

	// The right key joins.
	good := newNodeSpec(t, "right-key", "127.0.0.3").withMetrics(t,
		metricsJSON(t, 0.3, 8, 16, "amd", gpuJSON{0, "AMD Radeon PRO W7600", 8, 8, 0}))
	good.args = append([]string{"-encrypt", k1, "-join", seed.gossipAddr}, fastTimings...)
	g := good.start(t)
	g.waitReady(t)
	waitStatus(t, serf, seed, good.name, "alive", 10*time.Second)
	m, err := serfMembers(serf, seed)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m[bad.name]; ok {
		t.Errorf("the seed lists the wrong-key node: %s", statuses(m))
	}

	// Restart without -encrypt: the keyring in the data dir still holds
	// K1, so the join (to an encrypted seed) succeeds.
	good.secure = pki(t).clientArgs(t, good.name) // not the run's key either
	g.signal(t, syscall.SIGTERM)
	if code := g.waitExit(t, 8*time.Second); code != 0 {
		t.Fatalf("right-key node exited %d after SIGTERM, want 0", code)
	}
	waitStatus(t, serf, seed, good.name, "left", 5*time.Second)
	good.args = append([]string{"-join", seed.gossipAddr}, fastTimings...)
	g2 := good.start(t)
	g2.waitReady(t)
	if !strings.Contains(g2.logText(), "encrypted=true") {
		t.Errorf("the restarted node does not report encrypted=true:\n%s", tail(g2.logText(), 20))
	}
	waitStatus(t, serf, seed, good.name, "alive", 10*time.Second)
	if m, err = serfMembers(serf, seed); err != nil {
		t.Fatal(err)
	}
	if _, ok := m[bad.name]; ok {
		t.Errorf("the seed lists the wrong-key node: %s", statuses(m))
	}
}

// TestProcess_BadFlags checks that every invalid invocation exits 2 with a
// message naming the flag or variable, and that flag > env > file.
func TestProcess_BadFlags(t *testing.T) {
	bin := chiffonBinary(t)
	dir := t.TempDir()
	badFile := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(badFile, []byte(`{"heartbeat-interval": "2s", "colour": "blue"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string // the message must contain this
	}{
		{name: "negative heartbeat", args: []string{"-heartbeat-interval", "-1s"}, want: "-heartbeat-interval"},
		{name: "zero heartbeat", args: []string{"-heartbeat-interval", "0s"}, want: "-heartbeat-interval"},
		{name: "heartbeat not a duration", args: []string{"-heartbeat-interval", "often"}, want: "-heartbeat-interval"},
		{name: "unknown role", args: []string{"-role", "bogus"}, want: "-role"},
		{name: "encrypt not base64", args: []string{"-encrypt", "not*base64"}, want: "-encrypt"},
		{name: "encrypt wrong length", args: []string{"-encrypt", "YWJj"}, want: "-encrypt"},
		{name: "bind without port", args: []string{"-bind", "127.0.0.1"}, want: "-bind"},
		{name: "unknown flag", args: []string{"-no-such-flag"}, want: "no-such-flag"},
		{name: "negative suspicion-mult", args: []string{"-suspicion-mult", "-1"}, want: "-suspicion-mult"},
		{name: "negative gossip-nodes", args: []string{"-gossip-nodes", "-1"}, want: "-gossip-nodes"},
		{name: "retransmit-mult too large", args: []string{"--retransmit-mult=99"}, want: "-retransmit-mult: 99; must be from 1 to 16"},
		{name: "bad log level", args: []string{"-log-level", "loud"}, want: "-log-level"},
		{name: "unknown work handler mode", args: []string{"-work-handler", "cat", "-work-handler-mode", "daemon"}, want: `-work-handler-mode: "daemon"; want exec or persistent`},
		{name: "unknown work handler mode from env", env: []string{"CHIFFON_WORK_HANDLER_MODE=Persistent"}, want: `-work-handler-mode: "Persistent"`},
		{name: "stray argument", args: []string{"extra"}, want: "unexpected arguments"},
		{name: "bad env duration", env: []string{"CHIFFON_HEARTBEAT_INTERVAL=soon"}, want: "CHIFFON_HEARTBEAT_INTERVAL"},
		{name: "unknown config key", args: []string{"-config-file", badFile}, want: `unknown key "colour"`},
		{name: "missing config file", args: []string{"-config-file", filepath.Join(dir, "nope.json")}, want: "-config-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// A valid base so that only the case's setting is wrong; port 0
			// so that a node that wrongly starts does not collide.
			args := append([]string{"agent", "-data-dir", t.TempDir(), "-bind", "127.0.0.1:0",
				"-rpc-addr", "127.0.0.1:0", "-metrics-file", filepath.Join(t.TempDir(), "absent.json")}, tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = childEnv(tc.env...)
			out, err := cmd.CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("run: %v", err)
			}
			if code != 2 || !strings.Contains(string(out), tc.want) {
				t.Errorf("chiffon %s (env %v): exit %d, want 2 and a message naming %q; output:\n%s",
					strings.Join(args, " "), tc.env, code, tc.want, tail(string(out), 10))
			}
		})
	}

	// Precedence: the file sets 7s, the env 5s, a flag 3s; the node logs
	// the value it runs with.
	t.Run("precedence flag > env > file", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			env  []string
			args []string
			want string
		}{
			{name: "file", want: "7s"},
			{name: "env over file", env: []string{"CHIFFON_HEARTBEAT_INTERVAL=5s"}, want: "5s"},
			{name: "flag over env", env: []string{"CHIFFON_HEARTBEAT_INTERVAL=5s"}, args: []string{"-heartbeat-interval", "3s"}, want: "3s"},
			{name: "env names the config file", env: []string{"CHIFFON_CONFIG_FILE=@"}, want: "7s"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cfg := filepath.Join(t.TempDir(), "chiffon.json")
				b, _ := json.Marshal(map[string]any{
					"heartbeat-interval": "7s", "data-dir": t.TempDir(), "bind": "127.0.0.1:0",
					"rpc_addr": "127.0.0.1:0", "log-level": "info", "role": []string{"desktop"},
					"metrics-file": filepath.Join(t.TempDir(), "absent.json"),
				})
				if err := os.WriteFile(cfg, b, 0o644); err != nil {
					t.Fatal(err)
				}
				env := slices.Clone(tc.env)
				args := []string{"agent"}
				if i := slices.Index(env, "CHIFFON_CONFIG_FILE=@"); i >= 0 {
					env[i] = "CHIFFON_CONFIG_FILE=" + cfg
				} else {
					args = append(args, "-config-file", cfg)
				}
				p := startChiffon(t, "precedence", append(args, tc.args...), env)
				p.waitReady(t)
				line := ""
				sc := bufio.NewScanner(strings.NewReader(p.logText()))
				for sc.Scan() {
					if strings.Contains(sc.Text(), `msg="node started"`) {
						line = sc.Text()
					}
				}
				m := regexp.MustCompile(`heartbeat=(\S+)`).FindStringSubmatch(line)
				if m == nil || m[1] != tc.want {
					t.Errorf("node started with %q, want heartbeat=%s", line, tc.want)
				}
				p.kill()
			})
		}
	})
}
