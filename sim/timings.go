package sim

import (
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node"
)

// timings divides every gossip and liveness timing of a real deployment
// by the time scale, so that the run is the real one sped up (see
// DESIGN.md). Raft keeps its real timings, times raftSlack: it runs on
// loopback TCP at the machine's own speed and is not part of what is
// simulated.
type timings struct {
	scale, raftSlack float64
	// gossipNodes and retransmitMult are not timings: the gossip budget
	// every node runs with (Config.GossipNodes, RetransmitMult; 0:
	// memberlist's defaults).
	gossipNodes, retransmitMult int
}

func (t timings) d(v time.Duration) time.Duration { return time.Duration(float64(v) / t.scale) }

// gossip scales gc's SWIM timings and, through TuneSerf, the serf and
// memberlist timings package gossip does not expose. memberlist's TCP
// timeout stays real: it only bounds a stream (a join's or a push-pull's
// exchange of the member list) against a stuck peer, and a busy machine
// stretched scaled ones past it, failing joins. It also turns
// memberlist's compression off: it changes the bytes on the (simulated)
// wire only — messages are packed to the packet budget before compression
// — and its 64 KiB LZW table per packet made the allocations and the GC
// most of the CPU of a many-node process (docs/PERFORMANCE.md).
func (t timings) gossip(gc *gossip.Config) {
	gc.ProbeInterval = t.d(gc.ProbeInterval)
	gc.ProbeTimeout = t.d(gc.ProbeTimeout)
	gc.GossipInterval = t.d(gc.GossipInterval)
	gc.PushPullInterval = t.d(gc.PushPullInterval)
	gc.DeadNodeReclaimTime = t.d(gc.DeadNodeReclaimTime)
	gc.LeavePropagateDelay = t.d(gc.LeavePropagateDelay)
	gc.RetryInterval = t.d(gc.RetryInterval)
	gc.GossipNodes, gc.RetransmitMult = t.gossipNodes, t.retransmitMult
	gc.TuneSerf = func(sc *serf.Config) {
		ml := sc.MemberlistConfig
		ml.EnableCompression = false
		ml.GossipToTheDeadTime = t.d(ml.GossipToTheDeadTime)
		sc.ReconnectInterval = t.d(sc.ReconnectInterval)
		sc.ReapInterval = t.d(sc.ReapInterval)
		sc.BroadcastTimeout = t.d(sc.BroadcastTimeout)
		sc.FlapTimeout = t.d(sc.FlapTimeout)
		sc.RecentIntentTimeout = t.d(sc.RecentIntentTimeout)
		sc.QueueCheckInterval = t.d(sc.QueueCheckInterval)
	}
}

// node scales an orchestrator's gossip and liveness timings.
func (t timings) node(nc *node.Config) {
	t.gossip(&nc.Gossip)
	nc.HeartbeatInterval = t.d(nc.HeartbeatInterval)
	nc.LeaveTimeout = t.d(nc.LeaveTimeout)
	o := &nc.Orchestrator
	l := &o.Liveness
	l.SuspicionTimeout = t.d(l.SuspicionTimeout)
	l.RefreshInterval = t.d(l.RefreshInterval)
	l.VoterRoleGrace = t.d(l.VoterRoleGrace)
	o.ReconcileInterval = t.d(o.ReconcileInterval)
	o.MinReconcileInterval = t.d(o.MinReconcileInterval)
	if t.raftSlack > 1 {
		slack := func(v time.Duration) time.Duration { return time.Duration(float64(v) * t.raftSlack) }
		o.RaftHeartbeatTimeout = slack(o.RaftHeartbeatTimeout)
		o.RaftElectionTimeout = slack(o.RaftElectionTimeout)
		o.RaftLeaseTimeout = slack(o.RaftLeaseTimeout)
	}
}

// ScaleOrchestrator applies a run's time scale and raft slack to an
// orchestrator's configuration as Run does to its in-process ones. In
// process mode the sim starts each orchestrator as the hidden `chiffon
// sim-orchestrator` command, which builds the agent's configuration from
// its flags and passes it through this, so that the separate processes
// run the sped-up cluster the desktops run. The gossip budget stays what
// the flags set.
func ScaleOrchestrator(nc *node.Config, scale, raftSlack float64) {
	t := timings{scale: scale, raftSlack: raftSlack, gossipNodes: nc.Gossip.GossipNodes, retransmitMult: nc.Gossip.RetransmitMult}
	t.node(nc)
}
