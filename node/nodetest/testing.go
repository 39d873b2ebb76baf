package nodetest

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node"
	"github.com/chiffon-dev/chiffon/probe"
)

// Scale gives c the test timings, scaled down ~50×: SWIM suspects a
// silent node within ~0.3 s, the offline clock is 2 s instead of 90 s and
// the leader reconciles every 100 ms.
//
// Raft keeps Chiffon's own timings (500 ms heartbeat, election and
// lease). With a 100 ms lease a leader stepped down whenever the
// race detector on a busy 2-core CI machine held it up that long, and a
// test that had just asked for the leader met a follower (seen in CI:
// TestSnapshotEndpoint_LeaderFollowerAndErrors). The tests check the
// registry, liveness and failover, not election speed.
func Scale(c *node.Config) {
	c.HeartbeatInterval = 100 * time.Millisecond
	c.LeaveTimeout = 2 * time.Second
	g := &c.Gossip
	g.ProbeInterval, g.ProbeTimeout, g.GossipInterval = 100*time.Millisecond, 50*time.Millisecond, 20*time.Millisecond
	g.SuspicionMult = 3
	g.LeavePropagateDelay = 50 * time.Millisecond
	// A node that hears a member go silent before its leave intent calls
	// it failed; the next push-pull makes it left (30 s by default).
	g.PushPullInterval = 300 * time.Millisecond
	g.DeadNodeReclaimTime = 100 * time.Millisecond
	o := &c.Orchestrator
	o.RaftHeartbeatTimeout, o.RaftElectionTimeout, o.RaftLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
	o.Liveness = node.LivenessConfig{SuspicionTimeout: 2 * time.Second, ReapAfter: time.Hour, RefreshInterval: time.Second, DeadServerAfter: time.Hour,
		VoterRoleGrace: 5 * time.Second, // many push-pulls (300 ms) long
		FlapHalfLife:   consensus.DefaultFlapHalfLife}
	o.ReconcileInterval, o.MinReconcileInterval = 100*time.Millisecond, 50*time.Millisecond
}

// DefaultSample is what the i-th desktop of a Scaled cluster reports
// (from 0): 8·(i+1) CPU cores, all available, 16 GB of memory available,
// one 24 GB RTX 4090 with 20 GB free.
func DefaultSample(i int) probe.Sample {
	return probe.Sample{CPUCoresPhysical: 8 * (i + 1), CPUCoresAvailable: float64(8 * (i + 1)), MemoryAvailableGB: 16,
		GPUType: probe.GPUTypeNVIDIA, GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: 20,
		GPUs: []probe.GPU{{Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: -1}}}
}

// Sampler is a node.Sampler that reports whatever the test sets.
type Sampler struct {
	mu    sync.Mutex // guards s, err and calls
	s     probe.Sample
	err   error
	calls int
}

var _ node.Sampler = (*Sampler)(nil)

// NewSampler returns a Sampler reporting s.
func NewSampler(s probe.Sample) *Sampler { return &Sampler{s: s} }

// Set makes every later Sample return s and err.
func (f *Sampler) Set(s probe.Sample, err error) {
	f.mu.Lock()
	f.s, f.err = s, err
	f.mu.Unlock()
}

// Sample returns what Set last set; the node calls it at every heartbeat.
func (f *Sampler) Sample(context.Context) (probe.Sample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.s, f.err
}

// Calls returns how many samples were taken: one per heartbeat.
func (f *Sampler) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// T is a Cluster for one test: its methods fail the test instead of
// returning errors, and it closes when the test ends.
type T struct {
	*Cluster
	tb testing.TB
}

// Start starts a Scaled cluster for tb in tb.TempDir(), its logs in the
// test log (Info and up) unless cfg says otherwise, and closes it at
// cleanup.
func Start(tb testing.TB, cfg Config) *T {
	tb.Helper()
	if cfg.Dir == "" {
		cfg.Dir = tb.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testlog.New(tb, slog.LevelInfo)
	}
	cfg.Scaled = true
	c, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Log(err)
		}
	})
	if err := c.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return &T{Cluster: c, tb: tb}
}

// Add starts one more node; see Cluster.Add.
func (h *T) Add(name string, roles []string, edit func(*node.Config)) *node.Node {
	h.tb.Helper()
	n, err := h.Cluster.Add(context.Background(), name, roles, edit)
	if err != nil {
		h.tb.Fatal(err)
	}
	return n
}

// Restart restarts name on its data dir; see Cluster.Restart.
func (h *T) Restart(name string) *node.Node {
	h.tb.Helper()
	n, err := h.Cluster.Restart(context.Background(), name)
	if err != nil {
		h.tb.Fatal(err)
	}
	return n
}

// Kill crashes name; see Cluster.Kill.
func (h *T) Kill(name string) {
	h.tb.Helper()
	if err := h.Cluster.Kill(name); err != nil {
		h.tb.Fatal(err)
	}
}

// Stop has name leave and close; see Cluster.Stop.
func (h *T) Stop(name string) {
	h.tb.Helper()
	if err := h.Cluster.Stop(name); err != nil {
		h.tb.Fatal(err)
	}
}

// Partition cuts raft between names and the rest; see Cluster.Partition.
func (h *T) Partition(names ...string) {
	h.tb.Helper()
	if err := h.Cluster.Partition(names...); err != nil {
		h.tb.Fatal(err)
	}
}

// WaitLeader waits for a leader among the live orchestrators not
// partitioned off, and returns it.
func (h *T) WaitLeader(timeout time.Duration) *node.Node {
	h.tb.Helper()
	var l *node.Node
	testwait.Until(h.tb, timeout, "a raft leader", func() (bool, string) {
		l = h.Leader()
		return l != nil, fmt.Sprintf("none among %d live orchestrators", len(h.Orchestrators()))
	})
	return l
}

// WaitReady waits until a leader's registry has every live node online.
func (h *T) WaitReady(timeout time.Duration) {
	h.tb.Helper()
	testwait.Until(h.tb, timeout, "every node online in the registry", func() (bool, string) {
		online, want := h.online()
		return online == want, fmt.Sprintf("%d of %d online", online, want)
	})
}

// Status is name's status in observer's replica of the registry, or "".
func (h *T) Status(observer *node.Node, name string) consensus.Status {
	h.tb.Helper()
	n := h.Node(name)
	if n == nil {
		h.tb.Fatalf("nodetest: no node %q", name)
	}
	r, ok := observer.Store().FSM().Get(n.AgentID())
	if !ok {
		return ""
	}
	return r.Status
}

// WaitStatus waits until observer's registry shows name with status want,
// and returns how long that took.
func (h *T) WaitStatus(observer *node.Node, name string, want consensus.Status, timeout time.Duration) time.Duration {
	h.tb.Helper()
	return testwait.Until(h.tb, timeout, fmt.Sprintf("%s %s", name, want), func() (bool, string) {
		got := h.Status(observer, name)
		return got == want, fmt.Sprintf("%q", got)
	})
}

// Names returns n node names: prefix0, prefix1, ….
func Names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}
