package node_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node"
	"github.com/chiffon-dev/chiffon/node/nodetest"
	"github.com/chiffon-dev/chiffon/probe"
)

func TestCluster_RegistryLivenessAndFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: nodetest.Names("orch", 3), Desktops: []string{"desk-a", "desk-b", "desk-c"}})
	l := tc.WaitLeader(10 * time.Second)

	// Every node is in the registry, on every orchestrator, with metrics.
	for i, o := range tc.Orchestrators() {
		waitFor(t, 10*time.Second, fmt.Sprintf("6 records on orch%d", i), func() bool { return o.Store().FSM().Len() == 6 })
	}
	recA, _ := l.Store().FSM().Get(tc.Node("desk-a").AgentID())
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
		resp, err := http.Get("http://" + tc.Node("orch1").APIAddr() + "/metrics")
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
	tc.Sampler("desk-b").Set(probe.Sample{CPUCoresPhysical: 16, CPUCoresAvailable: 2, GPUType: "nvidia", GPUVRAMTotalGB: 24,
		GPUVRAMAvailableGB: 4, GPUs: []probe.GPU{{Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 4, UtilizationPct: -1}}}, nil)
	waitFor(t, 5*time.Second, "desk-b's new metrics", func() bool {
		r, _ := tc.Node("orch2").Store().FSM().Get(tc.Node("desk-b").AgentID())
		return r.Metrics.GPUVRAMMaxFreeGB == 4 && r.Metrics.CPUCoresAvailable == 2
	})

	// Graceful stop: left, quickly. (Serf's leave is best effort: now and
	// then the leader hears the dead message before the leave intent and
	// serf reports the member failed, so the registry shows it suspect
	// until a push-pull brings the intent.)
	tc.Stop("desk-b")
	t.Logf("desk-b left → registry left in %s", tc.WaitStatus(l, "desk-b", consensus.StatusLeft, 5*time.Second))

	// Killed: suspect within about a second, offline after the 2 s clock.
	killedAt := time.Now()
	tc.Kill("desk-a")
	suspectAfter := tc.WaitStatus(l, "desk-a", consensus.StatusSuspect, 5*time.Second)
	if suspectAfter > 1500*time.Millisecond {
		t.Errorf("suspect after %s, want well under the 2 s suspicion timeout", suspectAfter)
	}

	// Kill the leader while desk-a is suspect: the new leader continues the
	// same clock (offline ≈ 2 s after desk-a was last alive, not 2 s after
	// the new leader took over) and does not mark live nodes offline.
	oldName := tc.LeaderName()
	tc.Kill(oldName)
	newL := tc.WaitLeader(5 * time.Second)
	tc.WaitStatus(newL, "desk-a", consensus.StatusOffline, 10*time.Second)
	offlineAfter := time.Since(killedAt)
	t.Logf("desk-a: suspect after %s, offline after %s (suspicion timeout 2s, leader killed in between)", suspectAfter, offlineAfter)
	// The clock is anchored on FailureLag, an estimate centred on SWIM's
	// mean detection time: when the first probe comes at once, offline may
	// come up to a probe interval (100 ms here) before the 2 s.
	if offlineAfter < 2*time.Second-200*time.Millisecond || offlineAfter > 4*time.Second {
		t.Errorf("offline %s after the kill, want 2 s (less at most a probe interval or two) plus a little", offlineAfter)
	}
	if s := tc.Status(newL, "desk-c"); s != consensus.StatusOnline {
		t.Errorf("desk-c is %s after failover, want online", s)
	}
	rec, _ := newL.Store().FSM().Get(tc.Node("desk-c").AgentID())
	if rec.Metrics.CPUCoresPhysical != 24 {
		t.Errorf("desk-c record lost in failover: %+v", rec)
	}

	// desk-a comes back (same data dir, so the same agent_id): online at once.
	idA := tc.Node("desk-a").AgentID()
	if a2 := tc.Restart("desk-a"); a2.AgentID() != idA {
		t.Fatalf("agent_id changed across restart")
	}
	tc.WaitStatus(newL, "desk-a", consensus.StatusOnline, 5*time.Second)

	// The old leader restarts from its data dir and rejoins as a follower.
	back := tc.Restart(oldName)
	waitFor(t, 10*time.Second, "the old leader caught up", func() bool {
		return back.Store().FSM().Index() >= newL.Store().FSM().Index() && tc.Status(back, "desk-a") == consensus.StatusOnline
	})
	if back.Store().IsLeader() && newL.Store().IsLeader() {
		t.Fatal("two leaders")
	}
}

func TestCluster_ReapRemovesOldOfflineNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: []string{"orch"}, Desktops: []string{"desk"},
		Node: func(_ string, c *node.Config) error {
			c.Orchestrator.Liveness.SuspicionTimeout = 500 * time.Millisecond
			c.Orchestrator.Liveness.ReapAfter = 1 * time.Second
			return nil
		}})
	o := tc.WaitLeader(5 * time.Second)
	tc.WaitStatus(o, "desk", consensus.StatusOnline, 5*time.Second)
	tc.Kill("desk")
	tc.WaitStatus(o, "desk", consensus.StatusOffline, 5*time.Second)
	id := tc.Node("desk").AgentID()
	begin := time.Now()
	waitFor(t, 5*time.Second, "desk reaped", func() bool { _, ok := o.Store().FSM().Get(id); return !ok })
	t.Logf("reaped %s after offline (reap-after 1s)", time.Since(begin))
	// And it stays reaped although serf still remembers the failed member.
	index := o.Store().FSM().Index()
	// A negative check: it holds over several reconcile rounds (100 ms
	// apart here), looked at throughout.
	testwait.Holds(t, 500*time.Millisecond, "the reaped node stays reaped", func() (bool, string) {
		_, ok := o.Store().FSM().Get(id)
		return !ok, fmt.Sprintf("it came back (index %d → %d)", index, o.Store().FSM().Index())
	})
}

func TestCluster_MinorityPartitionCannotChangeRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	// Raft over the in-memory transport, so the leader can be cut off while
	// gossip keeps running.
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: nodetest.Names("p", 3), InmemRaft: true})
	l := tc.WaitLeader(10 * time.Second)
	waitFor(t, 5*time.Second, "3 records", func() bool { return l.Store().FSM().Len() == 3 })

	// Cut the leader off from raft peers (gossip still flows).
	tc.Partition(tc.LeaderName())
	before := l.Store().FSM().Index()
	_, err := l.Store().Apply(consensus.UpsertNodes{At: time.Now(), Nodes: []consensus.Record{{AgentID: "minority-write"}}}, 500*time.Millisecond)
	if err == nil {
		t.Fatal("a minority leader committed a write")
	}
	newL := tc.WaitLeader(5 * time.Second) // on the majority side
	// A desktop joins during the partition: only the majority records it.
	tc.Add("late-desk", []string{gossip.RoleDesktop}, nil)
	tc.WaitStatus(newL, "late-desk", consensus.StatusOnline, 5*time.Second)
	if _, ok := l.Store().FSM().Get("minority-write"); ok || l.Store().FSM().Index() != before {
		t.Fatalf("minority registry changed: index %d → %d", before, l.Store().FSM().Index())
	}

	// Heal: the old leader converges on the majority's registry.
	tc.Heal()
	waitFor(t, 10*time.Second, "old leader converged", func() bool {
		_, bad := l.Store().FSM().Get("minority-write")
		return !bad && tc.Status(l, "late-desk") == consensus.StatusOnline
	})
}

func TestCluster_LateOrchestratorIsAddedAsVoter(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: []string{"first"}})
	first := tc.WaitLeader(5 * time.Second)
	// A newcomer started with the same -bootstrap-expect 1 must join, not
	// found a second cluster.
	late := tc.Add("late", []string{gossip.RoleOrchestrator, gossip.RoleDesktop}, func(c *node.Config) {
		c.Orchestrator.BootstrapExpect = 1
	})
	waitFor(t, 10*time.Second, "late is a voter", func() bool {
		s, _ := first.Store().Servers()
		return len(s) == 2
	})
	tc.WaitStatus(late, "first", consensus.StatusOnline, 5*time.Second) // late replicates
	if late.Store().IsLeader() && first.Store().IsLeader() {
		t.Fatal("two clusters")
	}
	// Leaving gracefully removes it from the raft configuration.
	tc.Stop("late")
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
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: []string{"first"}})
	first := tc.WaitLeader(5 * time.Second)
	second := tc.Add("second", []string{gossip.RoleOrchestrator}, nil)
	waitFor(t, 10*time.Second, "second is a voter", func() bool {
		s, _ := first.Store().Servers()
		return len(s) == 2
	})

	if err := second.GoSilent(); err != nil { // the leader sees it fail
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
	if err := second.LeaveRaft(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	servers, _ := first.Store().Servers()
	if len(servers) != 1 || servers[0].ID != first.AgentID() {
		t.Fatalf("raft servers after second's leave: %+v", servers)
	}
	// Leaving again finds nothing to do.
	if err := second.LeaveRaft(time.Second); err != nil {
		t.Fatalf("second leave: %v", err)
	}
}
