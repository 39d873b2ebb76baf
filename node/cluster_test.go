package node

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/probe"
)

// scaled returns a node config with timings scaled down ~50×: SWIM suspects
// a silent node within ~0.3 s and the offline clock is 2 s instead of 90 s.
func scaled(t *testing.T, name string, roles ...string) Config {
	c := DefaultConfig()
	c.NodeName = name
	c.Roles = roles
	c.DataDir = t.TempDir()
	c.HeartbeatInterval = 100 * time.Millisecond
	c.LeaveTimeout = 2 * time.Second
	g := &c.Gossip
	g.BindAddr, g.RPCAddr = "127.0.0.1:0", ""
	g.ProbeInterval, g.ProbeTimeout, g.GossipInterval = 100*time.Millisecond, 50*time.Millisecond, 20*time.Millisecond
	g.SuspicionMult = 3
	g.LeavePropagateDelay = 50 * time.Millisecond
	// A node that hears a member go silent before its leave intent calls
	// it failed; the next push-pull makes it left (30 s by default).
	g.PushPullInterval = 300 * time.Millisecond
	g.DeadNodeReclaimTime = 100 * time.Millisecond
	o := &c.Orchestrator
	o.RaftAddr = "127.0.0.1:0"
	// Raft keeps Chiffon's own timings (500 ms heartbeat and election,
	// 250 ms lease). With a 100 ms lease a leader stepped down whenever the
	// race detector on a busy 2-core CI machine held it up that long, and a
	// test that had just asked for the leader met a follower (seen in CI:
	// TestSnapshotEndpoint_LeaderFollowerAndErrors). These tests check the
	// registry, liveness and failover, not election speed.
	o.RaftHeartbeatTimeout, o.RaftElectionTimeout, o.RaftLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
	o.Liveness = LivenessConfig{SuspicionTimeout: 2 * time.Second, ReapAfter: time.Hour, RefreshInterval: time.Second, DeadServerAfter: time.Hour}
	o.ReconcileInterval, o.MinReconcileInterval = 100*time.Millisecond, 50*time.Millisecond
	c.API.HTTPAddr = "127.0.0.1:0"
	c.Logger = testlog.New(t, slog.LevelInfo).With("node", name)
	return c
}

type testCluster struct {
	t      *testing.T
	orchs  []*Node
	desks  map[string]*Node
	fakes  map[string]*fakeSampler
	seed   string
	cfgs   map[string]Config
	killed map[string]bool
}

// newTestCluster starts n orchestrators (bootstrap-expect n) and the named
// desktops, all gossiping over loopback UDP/TCP and raft over loopback TCP.
func newTestCluster(t *testing.T, n int, desktops ...string) *testCluster {
	tc := &testCluster{t: t, desks: map[string]*Node{}, fakes: map[string]*fakeSampler{}, cfgs: map[string]Config{}, killed: map[string]bool{}}
	for i := range n {
		c := scaled(t, fmt.Sprintf("orch%d", i), gossip.RoleOrchestrator)
		c.Orchestrator.BootstrapExpect = n
		if i > 0 {
			c.Gossip.Join = []string{tc.seed}
		}
		o := startNode(t, c)
		if i == 0 {
			tc.seed = o.Gossip().Addr()
		}
		tc.orchs = append(tc.orchs, o)
		tc.cfgs[c.NodeName] = c
	}
	for i, name := range desktops {
		fs := &fakeSampler{}
		fs.set(probe.Sample{CPUCoresPhysical: 8 * (i + 1), CPUCoresAvailable: float64(8 * (i + 1)), MemoryAvailableGB: 16,
			GPUType: probe.GPUTypeNVIDIA, GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: 20,
			GPUs: []probe.GPU{{Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: -1}}}, nil)
		tc.fakes[name] = fs
		tc.startDesktop(name)
	}
	return tc
}

func (tc *testCluster) startDesktop(name string) *Node {
	c, ok := tc.cfgs[name]
	if !ok {
		c = scaled(tc.t, name, gossip.RoleDesktop)
		c.Sampler = tc.fakes[name]
		tc.cfgs[name] = c
	}
	for _, o := range tc.orchs {
		if !tc.killed[o.cfg.NodeName] {
			c.Gossip.Join = []string{o.Gossip().Addr()}
		}
	}
	n := startNode(tc.t, c)
	tc.desks[name] = n
	delete(tc.killed, name)
	return n
}

// leader waits for a leader among the live orchestrators.
func (tc *testCluster) leader(timeout time.Duration) *Node {
	tc.t.Helper()
	var l *Node
	waitFor(tc.t, timeout, "a raft leader", func() bool {
		for _, o := range tc.orchs {
			if !tc.killed[o.cfg.NodeName] && o.Store().IsLeader() {
				l = o
				return true
			}
		}
		return false
	})
	return l
}

// kill stops a node without leaving: its peers must detect it.
func (tc *testCluster) kill(n *Node) {
	tc.killed[n.cfg.NodeName] = true
	n.Close()
}

// status reads a node's status from an orchestrator's local replica.
func status(o *Node, agentID string) consensus.Status {
	r, ok := o.Store().FSM().Get(agentID)
	if !ok {
		return ""
	}
	return r.Status
}

func (tc *testCluster) waitStatus(o *Node, d *Node, want consensus.Status, timeout time.Duration) time.Duration {
	tc.t.Helper()
	begin := time.Now()
	waitFor(tc.t, timeout, fmt.Sprintf("%s %s on %s", d.cfg.NodeName, want, o.cfg.NodeName), func() bool {
		return status(o, d.AgentID()) == want
	})
	return time.Since(begin)
}

func TestCluster_RegistryLivenessAndFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	tc := newTestCluster(t, 3, "desk-a", "desk-b", "desk-c")
	l := tc.leader(10 * time.Second)

	// Every node is in the registry, on every orchestrator, with metrics.
	for _, o := range tc.orchs {
		waitFor(t, 10*time.Second, "6 records on "+o.cfg.NodeName, func() bool { return o.Store().FSM().Len() == 6 })
	}
	recA, _ := l.Store().FSM().Get(tc.desks["desk-a"].AgentID())
	if recA.Status != consensus.StatusOnline || recA.Metrics.GPUVRAMMaxFreeGB != 20 || recA.Metrics.CPUCoresPhysical != 8 ||
		recA.Name != "desk-a" || !recA.HasRole(gossip.RoleDesktop) {
		t.Fatalf("desk-a record = %+v", recA)
	}
	servers, _ := l.Store().Servers()
	if len(servers) != 3 {
		t.Fatalf("raft servers = %+v", servers)
	}
	// /metrics carries the gossip pool beside the API's own figures. (This
	// orchestrator's own gossip view may still be a member short: the
	// registry above is the leader's.)
	wantMetrics := []string{`chiffon_gossip_members{status="alive"} 6`, "chiffon_gossip_health_score", "chiffon_gossip_failure_lag_seconds"}
	testwait.Until(t, 5*time.Second, "/metrics with the gossip pool", func() (bool, string) {
		resp, err := http.Get("http://" + tc.orchs[1].APIAddr() + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range wantMetrics {
			if !strings.Contains(string(body), want) {
				return false, "lacks " + want
			}
		}
		return true, ""
	})

	// A metrics change reaches the registry.
	tc.fakes["desk-b"].set(probe.Sample{CPUCoresPhysical: 16, CPUCoresAvailable: 2, GPUType: "nvidia", GPUVRAMTotalGB: 24,
		GPUVRAMAvailableGB: 4, GPUs: []probe.GPU{{Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 4, UtilizationPct: -1}}}, nil)
	waitFor(t, 5*time.Second, "desk-b's new metrics", func() bool {
		r, _ := tc.orchs[2].Store().FSM().Get(tc.desks["desk-b"].AgentID())
		return r.Metrics.GPUVRAMMaxFreeGB == 4 && r.Metrics.CPUCoresAvailable == 2
	})

	// Graceful stop: left, quickly. (Serf's leave is best effort: now and
	// then the leader hears the dead message before the leave intent and
	// serf reports the member failed, so the registry shows it suspect
	// until a push-pull brings the intent.)
	b := tc.desks["desk-b"]
	if err := b.Leave(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	tc.killed["desk-b"] = true
	t.Logf("desk-b left → registry left in %s", tc.waitStatus(l, b, consensus.StatusLeft, 5*time.Second))

	// Killed: suspect within about a second, offline after the 2 s clock.
	a := tc.desks["desk-a"]
	killedAt := time.Now()
	tc.kill(a)
	suspectAfter := tc.waitStatus(l, a, consensus.StatusSuspect, 5*time.Second)
	if suspectAfter > 1500*time.Millisecond {
		t.Errorf("suspect after %s, want well under the 2 s suspicion timeout", suspectAfter)
	}

	// Kill the leader while desk-a is suspect: the new leader continues the
	// same clock (offline ≈ 2 s after desk-a was last alive, not 2 s after
	// the new leader took over) and does not mark live nodes offline.
	tc.kill(l)
	newL := tc.leader(5 * time.Second)
	tc.waitStatus(newL, a, consensus.StatusOffline, 10*time.Second)
	offlineAfter := time.Since(killedAt)
	t.Logf("desk-a: suspect after %s, offline after %s (suspicion timeout 2s, leader killed in between)", suspectAfter, offlineAfter)
	// The clock is anchored on FailureLag, an estimate centred on SWIM's
	// mean detection time: when the first probe comes at once, offline may
	// come up to a probe interval (100 ms here) before the 2 s.
	if offlineAfter < 2*time.Second-200*time.Millisecond || offlineAfter > 4*time.Second {
		t.Errorf("offline %s after the kill, want 2 s (less at most a probe interval or two) plus a little", offlineAfter)
	}
	if s := status(newL, tc.desks["desk-c"].AgentID()); s != consensus.StatusOnline {
		t.Errorf("desk-c is %s after failover, want online", s)
	}
	rec, _ := newL.Store().FSM().Get(tc.desks["desk-c"].AgentID())
	if rec.Metrics.CPUCoresPhysical != 24 {
		t.Errorf("desk-c record lost in failover: %+v", rec)
	}

	// desk-a comes back (same data dir, so the same agent_id): online at once.
	a2 := tc.startDesktop("desk-a")
	if a2.AgentID() != a.AgentID() {
		t.Fatalf("agent_id changed across restart")
	}
	tc.waitStatus(newL, a2, consensus.StatusOnline, 5*time.Second)

	// The old leader restarts from its data dir and rejoins as a follower.
	oldName := l.cfg.NodeName
	c := tc.cfgs[oldName]
	c.Gossip.Join = []string{newL.Gossip().Addr()}
	back := startNode(t, c)
	delete(tc.killed, oldName)
	waitFor(t, 10*time.Second, "the old leader caught up", func() bool {
		return back.Store().FSM().Index() >= newL.Store().FSM().Index() && status(back, a2.AgentID()) == consensus.StatusOnline
	})
	if back.Store().IsLeader() && newL.Store().IsLeader() {
		t.Fatal("two leaders")
	}
}

func TestCluster_ReapRemovesOldOfflineNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := scaled(t, "orch", gossip.RoleOrchestrator)
	c.Orchestrator.BootstrapExpect = 1
	c.Orchestrator.Liveness.SuspicionTimeout = 500 * time.Millisecond
	c.Orchestrator.Liveness.ReapAfter = 1 * time.Second
	o := startNode(t, c)
	waitFor(t, 5*time.Second, "leader", func() bool { return o.Store().IsLeader() })
	dc := scaled(t, "desk", gossip.RoleDesktop)
	dc.Sampler = &fakeSampler{}
	dc.Gossip.Join = []string{o.Gossip().Addr()}
	d := startNode(t, dc)
	waitFor(t, 5*time.Second, "desk online", func() bool { return status(o, d.AgentID()) == consensus.StatusOnline })
	d.Close()
	waitFor(t, 5*time.Second, "desk offline", func() bool { return status(o, d.AgentID()) == consensus.StatusOffline })
	begin := time.Now()
	waitFor(t, 5*time.Second, "desk reaped", func() bool { _, ok := o.Store().FSM().Get(d.AgentID()); return !ok })
	t.Logf("reaped %s after offline (reap-after 1s)", time.Since(begin))
	// And it stays reaped although serf still remembers the failed member.
	index := o.Store().FSM().Index()
	// A negative check: it holds over several reconcile rounds (100 ms
	// apart here), looked at throughout.
	testwait.Holds(t, 500*time.Millisecond, "the reaped node stays reaped", func() (bool, string) {
		_, ok := o.Store().FSM().Get(d.AgentID())
		return !ok, fmt.Sprintf("it came back (index %d → %d)", index, o.Store().FSM().Index())
	})
}

func TestCluster_MinorityPartitionCannotChangeRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	// Raft over the in-memory transport, so the leader can be cut off while
	// gossip keeps running.
	var trans []*raft.InmemTransport
	var nodes []*Node
	seed := ""
	for i := range 3 {
		_, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("inmem-%d", i)))
		trans = append(trans, tr)
		c := scaled(t, fmt.Sprintf("p%d", i), gossip.RoleOrchestrator)
		c.Orchestrator.Transport = tr
		c.Orchestrator.InMemoryRaft = true
		c.Orchestrator.BootstrapExpect = 3
		if seed != "" {
			c.Gossip.Join = []string{seed}
		}
		n := startNode(t, c)
		nodes = append(nodes, n)
		if seed == "" {
			seed = n.Gossip().Addr()
		}
	}
	for _, a := range trans {
		for _, b := range trans {
			if a != b {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	var l *Node
	waitFor(t, 10*time.Second, "leader", func() bool {
		for _, n := range nodes {
			if n.Store().IsLeader() {
				l = n
				return true
			}
		}
		return false
	})
	waitFor(t, 5*time.Second, "3 records", func() bool { return l.Store().FSM().Len() == 3 })

	// Cut the leader off from raft peers (gossip still flows).
	var li int
	for i, n := range nodes {
		if n == l {
			li = i
		}
	}
	trans[li].DisconnectAll()
	for i, tr := range trans {
		if i != li {
			tr.Disconnect(trans[li].LocalAddr())
		}
	}
	before := l.Store().FSM().Index()
	_, err := l.Store().Apply(consensus.UpsertNodes{At: time.Now(), Nodes: []consensus.Record{{AgentID: "minority-write"}}}, 500*time.Millisecond)
	if err == nil {
		t.Fatal("a minority leader committed a write")
	}
	var newL *Node
	waitFor(t, 5*time.Second, "majority leader", func() bool {
		for i, n := range nodes {
			if i != li && n.Store().IsLeader() {
				newL = n
				return true
			}
		}
		return false
	})
	// A desktop joins during the partition: only the majority records it.
	dc := scaled(t, "late-desk", gossip.RoleDesktop)
	dc.Sampler = &fakeSampler{}
	dc.Gossip.Join = []string{seed}
	d := startNode(t, dc)
	waitFor(t, 5*time.Second, "late-desk on the majority", func() bool { return status(newL, d.AgentID()) == consensus.StatusOnline })
	if _, ok := l.Store().FSM().Get("minority-write"); ok || l.Store().FSM().Index() != before {
		t.Fatalf("minority registry changed: index %d → %d", before, l.Store().FSM().Index())
	}

	// Heal: the old leader converges on the majority's registry.
	for i, tr := range trans {
		for j, other := range trans {
			if i != j {
				tr.Connect(other.LocalAddr(), other)
			}
		}
	}
	waitFor(t, 10*time.Second, "old leader converged", func() bool {
		_, bad := l.Store().FSM().Get("minority-write")
		return !bad && status(l, d.AgentID()) == consensus.StatusOnline
	})
}

func TestCluster_LateOrchestratorIsAddedAsVoter(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := scaled(t, "first", gossip.RoleOrchestrator)
	c.Orchestrator.BootstrapExpect = 1
	first := startNode(t, c)
	waitFor(t, 5*time.Second, "leader", func() bool { return first.Store().IsLeader() })
	// A newcomer started with the same -bootstrap-expect 1 must join, not
	// found a second cluster.
	lc := scaled(t, "late", gossip.RoleOrchestrator, gossip.RoleDesktop)
	lc.Orchestrator.BootstrapExpect = 1
	lc.Sampler = &fakeSampler{}
	lc.Gossip.Join = []string{first.Gossip().Addr()}
	late := startNode(t, lc)
	waitFor(t, 10*time.Second, "late is a voter", func() bool {
		s, _ := first.Store().Servers()
		return len(s) == 2
	})
	waitFor(t, 5*time.Second, "late replicates", func() bool { return status(late, first.AgentID()) == consensus.StatusOnline })
	if late.Store().IsLeader() && first.Store().IsLeader() {
		t.Fatal("two clusters")
	}
	// Leaving gracefully removes it from the raft configuration.
	if err := late.Leave(); err != nil {
		t.Fatal(err)
	}
	late.Close()
	waitFor(t, 10*time.Second, "late removed", func() bool {
		s, _ := first.Store().Servers()
		return len(s) == 1
	})
}

// TestCluster_LeavingOrchestratorRemovesItself: serf's leave is best
// effort, and a leader that saw a leaving orchestrator fail rather than
// leave keeps it as a voter (for DeadServerAfter, an hour here). Here the
// orchestrator's gossip stops without a leave, so the leader sees exactly
// that; its graceful raft leave must still take it out of the
// configuration, through its own API forwarded to the leader.
func TestCluster_LeavingOrchestratorRemovesItself(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := scaled(t, "first", gossip.RoleOrchestrator)
	c.Orchestrator.BootstrapExpect = 1
	first := startNode(t, c)
	waitFor(t, 5*time.Second, "leader", func() bool { return first.Store().IsLeader() })
	lc := scaled(t, "second", gossip.RoleOrchestrator)
	lc.Gossip.Join = []string{first.Gossip().Addr()}
	second := startNode(t, lc)
	waitFor(t, 10*time.Second, "second is a voter", func() bool {
		s, _ := first.Store().Servers()
		return len(s) == 2
	})

	second.stopLoops()
	if err := second.gossip.Close(); err != nil { // silent: the leader sees it fail
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "second failed in the leader's serf", func() bool {
		for _, m := range first.Gossip().Serf().Members() {
			if m.Name == "second" {
				return m.Status == serf.StatusFailed
			}
		}
		return false
	})
	if s, _ := first.Store().Servers(); len(s) != 2 {
		t.Fatalf("the leader removed a failed server at once: %+v", s)
	}
	if err := second.leaveRaft(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	servers, _ := first.Store().Servers()
	if len(servers) != 1 || servers[0].ID != first.AgentID() {
		t.Fatalf("raft servers after second's leave: %+v", servers)
	}
	// Leaving again finds nothing to do.
	if err := second.leaveRaft(time.Second); err != nil {
		t.Fatalf("second leave: %v", err)
	}
}
