package sim

import (
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node"
)

// TestTimings_RaftSlack: the time scale leaves raft's timeouts real, and
// the slack stretches the heartbeat, election and lease timeouts alike.
func TestTimings_RaftSlack(t *testing.T) {
	for _, tc := range []struct {
		slack float64
		want  time.Duration
	}{{1, 500 * time.Millisecond}, {4, 2 * time.Second}} {
		nc := node.DefaultConfig()
		timings{scale: 4, raftSlack: tc.slack}.node(&nc)
		o := nc.Orchestrator
		if o.RaftHeartbeatTimeout != tc.want || o.RaftElectionTimeout != tc.want || o.RaftLeaseTimeout != tc.want {
			t.Errorf("slack %v: raft heartbeat %s, election %s, lease %s; want %s each",
				tc.slack, o.RaftHeartbeatTimeout, o.RaftElectionTimeout, o.RaftLeaseTimeout, tc.want)
		}
		if got, want := o.Liveness.SuspicionTimeout, 90*time.Second/4; got != want {
			t.Errorf("slack %v: suspicion timeout %s, want %s (scaled)", tc.slack, got, want)
		}
	}
}

// TestTimings_GossipBudget: -gossip-nodes and -retransmit-mult reach every
// node's gossip config, desktops' and orchestrators' alike, unscaled.
func TestTimings_GossipBudget(t *testing.T) {
	tm := timings{scale: 4, raftSlack: 1, gossipNodes: 6, retransmitMult: 2}
	nc := node.DefaultConfig()
	tm.node(&nc)
	dc := gossip.DefaultConfig()
	tm.gossip(&dc)
	for name, g := range map[string]gossip.Config{"orchestrator": nc.Gossip, "desktop": dc} {
		if g.GossipNodes != 6 || g.RetransmitMult != 2 {
			t.Errorf("%s: gossip nodes %d, retransmit mult %d; want 6 and 2", name, g.GossipNodes, g.RetransmitMult)
		}
	}
}

// TestScaleOrchestrator: an orchestrator process of a scaled run gets the
// run's timings and slack, and keeps the gossip budget its flags set.
func TestScaleOrchestrator(t *testing.T) {
	nc := node.DefaultConfig()
	nc.Gossip.GossipNodes, nc.Gossip.RetransmitMult = 6, 3
	ScaleOrchestrator(&nc, 0.2, 4)
	if got, want := nc.Orchestrator.Liveness.SuspicionTimeout, 450*time.Second; got != want {
		t.Errorf("suspicion timeout %s at a fifth of real speed, want %s", got, want)
	}
	if got, want := nc.Gossip.ProbeInterval, 5*time.Second; got != want {
		t.Errorf("probe interval %s, want %s", got, want)
	}
	if got, want := nc.HeartbeatInterval, 150*time.Second; got != want {
		t.Errorf("heartbeat interval %s, want %s", got, want)
	}
	if got, want := nc.Orchestrator.RaftHeartbeatTimeout, 2*time.Second; got != want {
		t.Errorf("raft heartbeat timeout %s, want %s (real, times the slack)", got, want)
	}
	if nc.Gossip.GossipNodes != 6 || nc.Gossip.RetransmitMult != 3 || nc.Gossip.TuneSerf == nil {
		t.Errorf("gossip nodes %d, retransmit mult %d, serf tuned %v; want 6, 3 and serf's timings scaled",
			nc.Gossip.GossipNodes, nc.Gossip.RetransmitMult, nc.Gossip.TuneSerf != nil)
	}
}
