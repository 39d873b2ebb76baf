package node

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/probe"
)

// fakePool is a gossip pool of simulated desktops whose tags change at the
// rate real heartbeats would change them.
type fakePool struct {
	mu      sync.Mutex
	members []serf.Member
	wake    chan struct{}
}

func (p *fakePool) Members() []serf.Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]serf.Member, len(p.members))
	copy(out, p.members)
	return out
}

func (p *fakePool) FailureLag() time.Duration { return 4 * time.Second }

func desktopTags(i int, load float64) map[string]string {
	tags, err := gossip.EncodeTags(nil, gossip.NodeInfo{AgentID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
		Roles: []string{gossip.RoleDesktop}, Sample: probe.Sample{CPULoad1: load, CPUCoresPhysical: 16,
			CPUCoresAvailable: probe.AvailableCores(16, load), MemoryAvailableGB: 30, GPUType: "nvidia",
			GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: 20,
			GPUs: []probe.GPU{{Name: "NVIDIA GeForce RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: 10}}}})
	if err != nil {
		panic(err)
	}
	return tags
}

// heartbeat changes member i's tags, as a desktop's 30 s heartbeat does
// (its load average moved), and wakes the leader as serf's update event does.
func (p *fakePool) heartbeat(i int, load float64) {
	p.mu.Lock()
	p.members[i].Tags = desktopTags(i, load)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// BenchmarkLeader_RaftEntriesAt1000Desktops runs the real leader loop for
// 10 s against 1,000 simulated desktops on a 30 s heartbeat (33 tag updates
// a second, every one a real change) and reports how many raft entries per
// second that costs. Goal: at most ~5. Run with -benchtime=1x.
func BenchmarkLeader_RaftEntriesAt1000Desktops(b *testing.B) {
	const desktops, heartbeat, run = 1000, 30 * time.Second, 10 * time.Second
	sc := consensus.DefaultConfig()
	sc.NodeID, sc.InMemory, sc.BindAddr = "bench-leader", true, "127.0.0.1:0"
	store, err := consensus.New(sc)
	if err != nil {
		b.Fatal(err)
	}
	if err := store.Open(); err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	if err := store.Bootstrap(nil); err != nil {
		b.Fatal(err)
	}
	testwait.Until(b, 10*time.Second, "the single voter elected", testwait.Bool(store.IsLeader))
	pool := &fakePool{wake: make(chan struct{}, 1)}
	for i := range desktops {
		pool.members = append(pool.members, serf.Member{Name: fmt.Sprintf("desk-%04d", i), Addr: net.IPv4(10, 0, byte(i/250), byte(i%250)),
			Port: 7946, Status: serf.StatusAlive, Tags: desktopTags(i, 1)})
	}
	oc := DefaultOrchestratorConfig()
	r := newReconciler(oc.Liveness, pool, store, slog.New(slog.DiscardHandler), time.Now)
	// The first reconcile records all 1,000 desktops; measure after it.
	if _, err := r.reconcile(10 * time.Second); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		start := store.FSM().Index()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			leaderLoop(ctx, r, pool.wake, oc.ReconcileInterval, oc.MinReconcileInterval)
		}()
		// Heartbeats spread evenly: one every heartbeat/desktops.
		tick := time.NewTicker(heartbeat / desktops)
		began := time.Now()
		updates := 0
		for time.Since(began) < run {
			<-tick.C
			pool.heartbeat(rand.IntN(desktops), 1+rand.Float64()*8)
			updates++
		}
		tick.Stop()
		cancel()
		<-done
		elapsed := time.Since(began).Seconds()
		entries := float64(store.FSM().Index() - start)
		b.ReportMetric(entries/elapsed, "raft-entries/s")
		b.ReportMetric(float64(updates)/elapsed, "tag-updates/s")
		b.ReportMetric(float64(updates)/max(entries, 1), "updates/entry")
	}
}
