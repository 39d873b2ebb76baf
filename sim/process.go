package sim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/gossip/simnet"
)

// Orchestrator modes (Config.OrchestratorMode).
const (
	// OrchestratorsInProcess runs the orchestrators as node.Nodes in the
	// sim's own process, every node's gossip on gossip/simnet (the
	// default).
	OrchestratorsInProcess = "in-process"
	// OrchestratorsProcess runs each orchestrator as its own `chiffon
	// agent` process on loopback, and the desktops' gossip on real
	// loopback sockets, so that the leader's memory and CPU are its own
	// process's (see DESIGN.md, "Orchestrators as processes").
	OrchestratorsProcess = "process"
)

// ErrOrchestratorExited means an orchestrator process started by the sim
// exited while the run still needed it.
var ErrOrchestratorExited = errors.New("sim: orchestrator process exited")

// validateMode checks what process mode cannot do: simnet does not reach
// into other processes, so the network's flags and partitions are
// refused rather than applied to some links only.
func (c *Config) validateMode() error {
	switch c.OrchestratorMode {
	case "", OrchestratorsInProcess:
		c.OrchestratorMode = OrchestratorsInProcess
		if c.UDPLossOutside != 0 {
			return fmt.Errorf("%w: -udp-loss-outside records loss the host network applies to loopback sockets "+
				"(-orchestrators process); in-process runs use -loss", ErrInvalidConfig)
		}
		return nil
	case OrchestratorsProcess:
	default:
		return fmt.Errorf("%w: -orchestrators: %q; want %s or %s", ErrInvalidConfig, c.OrchestratorMode,
			OrchestratorsInProcess, OrchestratorsProcess)
	}
	if c.Loss != 0 || c.Latency != 0 || c.Jitter != 0 || c.Partition != 0 {
		return fmt.Errorf("%w: -orchestrators process runs gossip on real loopback sockets, which the simulated network "+
			"cannot reach: -loss, -latency, -jitter and -partition need -orchestrators in-process", ErrInvalidConfig)
	}
	if c.OrchestratorBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("%w: -orchestrator-binary: %v", ErrInvalidConfig, err)
		}
		c.OrchestratorBinary = exe
	}
	return nil
}

// orchProc is one orchestrator running as a `chiffon agent` process.
type orchProc struct {
	name     string
	dataDir  string
	logPath  string
	gossip   string // gossip address (TCP and UDP)
	httpAddr string
	rpcAddr  string // serf RPC
	cmd      *exec.Cmd
	done     chan struct{} // closed once the process has exited
	err      error         // Wait's error; read after done
}

func (p *orchProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitErr is ErrOrchestratorExited, with the end of its log, once the
// process has exited; nil while it runs.
func (p *orchProc) exitErr() error {
	if !p.exited() {
		return nil
	}
	return fmt.Errorf("%w: %s (%v); its log ends:\n%s", ErrOrchestratorExited, p.name, p.err, p.logTail(20))
}

// exitErr is the first orchestrator's exit, nil while all run.
func (pc *procCluster) exitErr() error {
	for _, p := range pc.orchs {
		if err := p.exitErr(); err != nil {
			return err
		}
	}
	return nil
}

// logTail is the last lines of the process's log, for error messages.
func (p *orchProc) logTail(lines int) string {
	b, _ := os.ReadFile(p.logPath)
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// procCluster is the orchestrators of a process-mode run. Started and
// closed by Run's goroutine; leader is also read by the observer and the
// query goroutines.
type procCluster struct {
	bin   string
	dir   string
	extra []string // flags every orchestrator gets besides the cluster's own
	// scale and raftSlack are the run's: other than 1, the orchestrators
	// run as `chiffon sim-orchestrator` with those timings.
	scale, raftSlack float64
	orchs            []*orchProc
	client           *http.Client

	mu     sync.Mutex
	leader *orchProc // last known leader; guarded by mu
}

// startProcs starts n orchestrators (orch-1 … orch-n) on 127.0.0.1 with
// free ports, data dirs and logs under dir; orch-2 … join orch-1, and
// raft bootstraps once all n are in. On error every process started is
// stopped again.
func (r *run) startProcs(dir string) (*procCluster, error) {
	pc := &procCluster{bin: r.cfg.OrchestratorBinary, dir: dir, scale: r.cfg.TimeScale, raftSlack: r.cfg.RaftSlack,
		client: &http.Client{Timeout: 10 * time.Second}}
	if r.cfg.GossipNodes > 0 {
		pc.extra = append(pc.extra, "-gossip-nodes", strconv.Itoa(r.cfg.GossipNodes))
	}
	if r.cfg.RetransmitMult > 0 {
		pc.extra = append(pc.extra, "-retransmit-mult", strconv.Itoa(r.cfg.RetransmitMult))
	}
	for i := range r.cfg.Orchestrators {
		p, err := pc.startOne(fmt.Sprintf("orch-%d", i+1), r.cfg.Orchestrators, r.progress)
		if err != nil {
			pc.close()
			return nil, err
		}
		pc.orchs = append(pc.orchs, p)
	}
	return pc, nil
}

// portTries is how many times startOne starts an orchestrator whose
// ports were taken.
const portTries = 5

// errPortTaken: an orchestrator exited because a port picked for it was
// in use by the time it bound it.
var errPortTaken = errors.New("a port picked for it was taken before it bound it")

// startOne starts orchestrator name on ports picked free and waits until
// it has bound them all. A port picked free can be taken before the agent
// binds it — any process's outgoing connection may get it as its source
// port (it happened to orch-2 of a 1,000-desktop run: "listen for http api
// on 127.0.0.1:46363: … address already in use") — so an agent that exits
// saying so is started again on other ports, up to portTries times.
func (pc *procCluster) startOne(name string, expect int, progress func(string, ...any)) (*orchProc, error) {
	for try := 1; ; try++ {
		p, err := pc.spawn(name, expect)
		if err != nil {
			return nil, err
		}
		err = pc.waitBound(p, time.Minute)
		if err == nil {
			return p, nil
		}
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if try == portTries || !errors.Is(err, errPortTaken) {
			return nil, err
		}
		progress("%s: %v; starting it again on other ports", name, err)
	}
}

// waitBound waits until p has bound its ports: its gossip is up (its
// /metrics counts itself alive: raft and HTTP bind before gossip) and its
// serf RPC, bound last, takes a connection. errPortTaken if it exited
// because one was in use.
func (pc *procCluster) waitBound(p *orchProc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.exited() {
			for line := range strings.Lines(p.logTail(20)) {
				if strings.Contains(line, "address already in use") {
					return fmt.Errorf("%w: %s", errPortTaken, strings.TrimSpace(line))
				}
			}
			return p.exitErr()
		}
		if n, err := pc.aliveMembers(p); err == nil && n >= 1 {
			if c, err := net.DialTimeout("tcp", p.rpcAddr, time.Second); err == nil {
				_ = c.Close()
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not bind its ports within %s; its log ends:\n%s", p.name, timeout, p.logTail(20))
		}
		select {
		case <-p.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// spawn starts orchestrator name's process on ports picked free, in a
// fresh data dir.
func (pc *procCluster) spawn(name string, expect int) (*orchProc, error) {
	p := &orchProc{name: name, dataDir: filepath.Join(pc.dir, name), logPath: filepath.Join(pc.dir, name+".log"),
		done: make(chan struct{})}
	if err := os.RemoveAll(p.dataDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(p.dataDir, 0o700); err != nil {
		return nil, err
	}
	gport, err := freeGossipPort()
	if err != nil {
		return nil, err
	}
	ports := make([]string, 3) // raft, HTTP, serf RPC
	for k := range ports {
		if ports[k], err = freeTCPPort(); err != nil {
			return nil, err
		}
	}
	p.gossip = "127.0.0.1:" + strconv.Itoa(gport)
	p.httpAddr = "127.0.0.1:" + ports[1]
	p.rpcAddr = "127.0.0.1:" + ports[2]
	args := []string{"agent"}
	if pc.scale != 1 || pc.raftSlack > 1 {
		// The same agent with the run's timings (cmd/chiffon's hidden
		// sim-orchestrator command, ScaleOrchestrator).
		args = []string{"sim-orchestrator", "-time-scale", strconv.FormatFloat(pc.scale, 'g', -1, 64),
			"-raft-slack", strconv.FormatFloat(pc.raftSlack, 'g', -1, 64), "--"}
	}
	args = append(args, "-node", name, "-role", gossip.RoleOrchestrator, "-data-dir", p.dataDir,
		"-bind", p.gossip, "-raft-addr", "127.0.0.1:"+ports[0], "-http-addr", p.httpAddr,
		"-rpc-addr", p.rpcAddr, "-bootstrap-expect", strconv.Itoa(expect),
		"-insecure", "-enable-debug", "-log-level", "warn")
	args = append(args, pc.extra...)
	if len(pc.orchs) > 0 {
		// orch-1 may not listen yet: retry every second, not every 30 s
		// (-retry-interval's default made a start take 31 s).
		args = append(args, "-retry-join", pc.orchs[0].gossip, "-retry-interval", "1s")
	}
	f, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	// Not CommandContext: an interrupted run stops its orchestrators with
	// SIGTERM in close, not with SIGKILL.
	p.cmd = exec.Command(pc.bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.Env = childEnv()
	// The kernel kills the orchestrator if the sim dies without its
	// deferred close (SIGKILL, a crash).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, pc.bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	return p, nil
}

// childEnv is the environment without CHIFFON_* variables (the sim's
// flags, not the shell's, configure its orchestrators) and without GOGC
// and GOMEMLIMIT: those tune the simulating process (a large run needs
// GOGC=400 GOMEMLIMIT=16GiB), and an orchestrator given them grew its heap
// to five times what it keeps live, so the leader RSS the report gives
// was not what an operator's agent uses.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "CHIFFON_") && k != "GOGC" && k != "GOMEMLIMIT" {
			env = append(env, kv)
		}
	}
	return env
}

// freeGossipPort is a 127.0.0.1 port free for both TCP and UDP (memberlist
// binds both). Another program may take it before the agent binds it; the
// agent then exits and startOne starts it again on other ports.
func freeGossipPort() (int, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = ln.Close()
		if err == nil {
			_ = pc.Close()
			return port, nil
		}
	}
	return 0, errors.New("no 127.0.0.1 port free for both TCP and UDP")
}

func freeTCPPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}

// close stops every orchestrator with SIGTERM (a graceful leave), waits
// for it (SIGKILL after 15 s) and removes its data dir and log.
func (pc *procCluster) close() {
	for _, p := range pc.orchs {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range pc.orchs {
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		_ = os.RemoveAll(p.dataDir)
		_ = os.Remove(p.logPath)
	}
	pc.client.CloseIdleConnections()
}

// pids are the orchestrators' process ids, in start order.
func (pc *procCluster) pids() []int {
	var out []int
	for _, p := range pc.orchs {
		out = append(out, p.cmd.Process.Pid)
	}
	return out
}

// getJSON GETs url into v.
func (pc *procCluster) getJSON(url string, v any) error {
	resp, err := pc.client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return errStatus(resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// findLeader asks the orchestrators, last known leader first, who leads,
// and returns that orchestrator (nil: none known, or it is not one of
// ours). An orchestrator that has exited fails the run.
func (pc *procCluster) findLeader() (*orchProc, error) {
	pc.mu.Lock()
	last := pc.leader
	pc.mu.Unlock()
	order := pc.orchs
	if last != nil {
		order = append([]*orchProc{last}, pc.orchs...)
	}
	for _, p := range order {
		if err := p.exitErr(); err != nil {
			return nil, err
		}
		var l apitype.Leader
		if err := pc.getJSON("http://"+p.httpAddr+"/v1/status/leader", &l); err != nil || l.HTTPAddr == "" {
			continue
		}
		for _, q := range pc.orchs {
			if q.httpAddr == l.HTTPAddr {
				pc.mu.Lock()
				pc.leader = q
				pc.mu.Unlock()
				return q, nil
			}
		}
	}
	return nil, nil
}

// registry is the leader's registry, read with GET /v1/agents (a default,
// consistent read), as the fields the observer uses.
func (pc *procCluster) registry(l *orchProc) ([]consensus.Record, error) {
	var agents []apitype.Agent
	if err := pc.getJSON("http://"+l.httpAddr+"/v1/agents", &agents); err != nil {
		return nil, err
	}
	recs := make([]consensus.Record, len(agents))
	for i, a := range agents {
		recs[i] = consensus.Record{AgentID: a.AgentID, Name: a.Name, Roles: a.Roles, Status: consensus.Status(a.Status),
			LastHeartbeatAt: a.LastHeartbeatAt, StatusChangedAt: a.StatusChangedAt}
		recs[i].Metrics.CPULoad15Min = a.Metrics.CPULoad15Min
	}
	return recs, nil
}

// raftStats reads the leader's last log index and term from its /metrics.
func (pc *procCluster) raftStats(l *orchProc) (index, term uint64, err error) {
	v, err := pc.metrics(l, "chiffon_raft_last_log_index", "chiffon_raft_term")
	if err != nil {
		return 0, 0, err
	}
	return uint64(v[0]), uint64(v[1]), nil
}

// aliveMembers is how many gossip members orchestrator p's serf has alive
// (chiffon_gossip_members{status="alive"} on its /metrics).
func (pc *procCluster) aliveMembers(p *orchProc) (int, error) {
	v, err := pc.metrics(p, `chiffon_gossip_members{status="alive"}`)
	if err != nil {
		return 0, err
	}
	return int(v[0]), nil
}

// metrics reads the samples named (name with its labels, as /metrics
// prints them) from p's /metrics, in the order asked; an error if one is
// missing.
func (pc *procCluster) metrics(p *orchProc, names ...string) ([]float64, error) {
	resp, err := pc.client.Get("http://" + p.httpAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	vals := make([]float64, len(names))
	found := make([]bool, len(names))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		k := slices.Index(names, name)
		if k < 0 {
			continue
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics: %s %q: %w", name, val, err)
		}
		vals[k], found[k] = f, true
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for k, ok := range found {
		if !ok {
			return nil, fmt.Errorf("%s: /metrics has no %s", p.name, names[k])
		}
	}
	return vals, nil
}

// procStat is one process's CPU time and memory, from /proc.
type procStat struct {
	cpu          time.Duration // user + system
	rssMiB, peak float64       // VmRSS, VmHWM
}

// clockTick is the kernel's USER_HZ, the unit of /proc/PID/stat's times:
// 100 on every Linux architecture Go supports.
const clockTick = 100

// readProcStat reads pid's CPU time (/proc/PID/stat utime + stime) and
// resident memory (/proc/PID/status VmRSS, VmHWM).
func readProcStat(pid int) (procStat, error) {
	st := procStat{}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return st, err
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis start at field 3 (state).
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b)[i+1:])
	if len(f) < 13 {
		return st, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return st, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	st.cpu = time.Duration(utime+stime) * time.Second / clockTick
	st.rssMiB, st.peak = rss(strconv.Itoa(pid))
	if st.rssMiB < 0 {
		return st, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
	}
	return st, nil
}

// transport is a desktop's gossip transport: simnet's, or a real one on
// loopback in process mode.
type transport interface {
	memberlist.Transport
	Addr() string
}

var (
	_ transport = (*simnet.Transport)(nil)
	_ transport = (*netTransport)(nil)
)

// netTransport is the transport a real node gossips on (UDP and TCP, each
// packet in a buffer of its own size: gossip.CompactTransport) on a
// 127.0.0.1 port, with its address.
type netTransport struct {
	*gossip.CompactTransport
	addr string
}

func (t *netTransport) Addr() string { return t.addr }

// newNetTransport binds a new transport on 127.0.0.1, port picked by the
// kernel for TCP and then taken for UDP too (retried if UDP's is in use).
func newNetTransport() (*netTransport, error) {
	ct, err := gossip.NewCompactTransport("127.0.0.1", 0, discardLog)
	if err != nil {
		return nil, fmt.Errorf("bind a gossip transport on 127.0.0.1: %w", err)
	}
	return &netTransport{CompactTransport: ct, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ct.GetAutoBindPort()))}, nil
}

// newTransport is a new gossip transport for the desktop name: on the
// simulated network, or on loopback in process mode.
func (r *run) newTransport(name string) (transport, error) {
	if r.procs != nil {
		return newNetTransport()
	}
	return r.nw.NewTransport(name)
}

// discardLog silences memberlist's transport: the desktops' own serf and
// memberlist log through Config.Logger, and a thousand transports
// shutting down would fill a screen.
var discardLog = log.New(io.Discard, "", 0)

// The orchestrators as the run sees them, in either mode: in-process
// node.Nodes (nodetest.Cluster) or processes (procCluster).

// leaderName is the leader's name, "" while none is known.
func (r *run) leaderName() string {
	if r.procs == nil {
		return r.cluster.LeaderName()
	}
	l, _ := r.procs.findLeader()
	if l == nil {
		return ""
	}
	return l.name
}

// leaderRegistry is the leader's registry; ok is false while no leader
// answers.
func (r *run) leaderRegistry() (recs []consensus.Record, ok bool) {
	if r.procs == nil {
		l := r.cluster.Leader()
		if l == nil {
			return nil, false
		}
		return l.Store().FSM().List(), true
	}
	l, _ := r.procs.findLeader()
	if l == nil {
		return nil, false
	}
	recs, err := r.procs.registry(l)
	return recs, err == nil
}

// leaderRaft is the leader's last raft log index and term.
func (r *run) leaderRaft() (index, term uint64, ok bool) {
	if r.procs == nil {
		l := r.cluster.Leader()
		if l == nil {
			return 0, 0, false
		}
		st := l.Store().Stats()
		index, _ = strconv.ParseUint(st["last_log_index"], 10, 64)
		term, _ = strconv.ParseUint(st["term"], 10, 64)
		return index, term, true
	}
	l, _ := r.procs.findLeader()
	if l == nil {
		return 0, 0, false
	}
	index, term, err := r.procs.raftStats(l)
	return index, term, err == nil
}

// leaderAPIAddr is the leader's HTTP API address, "" while none is known.
func (r *run) leaderAPIAddr() string {
	if r.procs == nil {
		if l := r.cluster.Leader(); l != nil {
			return l.APIAddr()
		}
		return ""
	}
	if l, _ := r.procs.findLeader(); l != nil {
		return l.httpAddr
	}
	return ""
}

// orchestratorAPI is the HTTP API address of the orchestrator name, ""
// if it is not up.
func (r *run) orchestratorAPI(name string) string {
	if r.procs == nil {
		if n := r.cluster.Node(name); n != nil {
			return n.APIAddr()
		}
		return ""
	}
	for _, p := range r.procs.orchs {
		if p.name == name && !p.exited() {
			return p.httpAddr
		}
	}
	return ""
}

// orchestratorGossip is the gossip address of the orchestrator name, ""
// if it is not up.
func (r *run) orchestratorGossip(name string) string {
	if r.procs == nil {
		if n := r.cluster.Node(name); n != nil {
			return n.Gossip().Addr()
		}
		return ""
	}
	for _, p := range r.procs.orchs {
		if p.name == name && !p.exited() {
			return p.gossip
		}
	}
	return ""
}

// orchestratorsGone is an orchestrator process's exit (process mode);
// nil in-process.
func (r *run) orchestratorsGone() error {
	if r.procs == nil {
		return nil
	}
	return r.procs.exitErr()
}

// pollInterval is how often the observer reads the registry. A process-
// mode poll is an HTTP read of every record that the leader process pays
// for, so it comes once a second (a dashboard's pace); the tag-to-registry
// time stays exact within it, taken from the record's last_heartbeat_at.
func (r *run) pollInterval() time.Duration {
	if r.procs != nil {
		return time.Second
	}
	return pollInterval(len(r.desks))
}

// settlePoll is how often the start waits re-check (see pollInterval).
func (r *run) settlePoll() time.Duration {
	if r.procs != nil {
		return 500 * time.Millisecond
	}
	return 50 * time.Millisecond
}

// startProfile profiles the sim process in-process, where the leader's
// CPU comes from the profile's labels; in process mode the leader's CPU is
// its own process's, and nothing is profiled unless Config.CPUProfile asks.
func (r *run) startProfile() *cpuProfile {
	if r.procs != nil && r.cfg.CPUProfile == "" {
		return &cpuProfile{}
	}
	return startProfile()
}

// orchestratorStats reads every orchestrator process's CPU and memory
// (nil in-process); a process that cannot be read is left out.
func (r *run) orchestratorStats() map[string]procStat {
	if r.procs == nil {
		return nil
	}
	out := map[string]procStat{}
	for _, p := range r.procs.orchs {
		if st, err := readProcStat(p.cmd.Process.Pid); err == nil {
			out[p.name] = st
		}
	}
	return out
}

// leaderProcess fills the report's leader figures from the leader
// process's /proc readings at the start (before) and end (after) of the
// measured part (process mode only).
func (r *run) leaderProcess(leader string, before, after map[string]procStat, elapsed time.Duration) {
	if r.procs == nil {
		return
	}
	rep := r.rep
	rep.OrchestratorPIDs = r.procs.pids()
	for _, p := range r.procs.orchs {
		if p.name == leader {
			rep.LeaderPID = p.cmd.Process.Pid
		}
	}
	a, ok := after[leader]
	if !ok {
		return
	}
	rep.LeaderRSSMiB, rep.LeaderPeakRSSMiB = a.rssMiB, a.peak
	if b, ok := before[leader]; ok {
		rep.LeaderCPUPct = 100 * (a.cpu - b.cpu).Seconds() / elapsed.Seconds()
	}
}
