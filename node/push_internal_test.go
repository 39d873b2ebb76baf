package node

import (
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/node/telemetry"
	"github.com/chiffon-dev/chiffon/probe"
)

func sampledTags(t *testing.T, id string, cores float64, at time.Time) map[string]string {
	t.Helper()
	tags, err := gossip.EncodeTags(nil, gossip.NodeInfo{AgentID: id, Roles: []string{gossip.RoleDesktop},
		Sample: probe.Sample{CPUCoresPhysical: 16, CPUCoresAvailable: cores, GPUType: probe.GPUTypeNone, TakenAt: at}})
	if err != nil {
		t.Fatal(err)
	}
	return tags
}

// pushReconciler is a reconciler over pool and st on the test's clock,
// and reconcile runs one round and returns id's record.
func pushReconciler(t *testing.T, pool *scriptedPool, st *consensus.Store, clock *time.Time) *reconciler {
	live := LivenessConfig{SuspicionTimeout: 90 * time.Second, ReapAfter: time.Hour, RefreshInterval: 30 * time.Second, DeadServerAfter: time.Hour}
	r := newReconciler(live, pool, st, testlog.New(t, slog.LevelDebug), func() time.Time { return *clock })
	r.overlay = telemetry.NewOverlay(10, time.Minute)
	return r
}

func reconcileRecord(t *testing.T, r *reconciler, st *consensus.Store, id string) consensus.Record {
	t.Helper()
	if _, err := r.reconcile(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	rec, _ := st.FSM().Get(id)
	return rec
}

// The leader writes a pushed change that gossip has not brought yet, and
// goes back to gossip's tags once gossip carries a newer sample; a push
// never makes a failed member online.
func TestReconciler_PushedTagsAheadOfGossip(t *testing.T) {
	st := singleStore(t)
	pool := &scriptedPool{members: map[string]serf.Member{}}
	clock := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	r := pushReconciler(t, pool, st, &clock)
	const id = "22222222-2222-4222-8222-222222222222"
	reconcile := func() consensus.Record { t.Helper(); return reconcileRecord(t, r, st, id) }

	pool.set("desk", serf.StatusAlive, sampledTags(t, id, 16, clock))
	if rec := reconcile(); rec.Metrics.CPUCoresAvailable != 16 {
		t.Fatalf("joined with %v cores, want 16", rec.Metrics.CPUCoresAvailable)
	}
	// The desktop's next sample arrives by push only.
	clock = clock.Add(30 * time.Second)
	if _, err := r.overlay.Put("desk", sampledTags(t, id, 2, clock), clock); err != nil {
		t.Fatal(err)
	}
	if rec := reconcile(); rec.Metrics.CPUCoresAvailable != 2 || !rec.LastHeartbeatAt.Equal(clock) {
		t.Fatalf("after the push: %v cores, heartbeat %v; want 2 at %v", rec.Metrics.CPUCoresAvailable, rec.LastHeartbeatAt, clock)
	}
	// Gossip catches up and then moves past the push (a later push was
	// lost): gossip's newer sample stands.
	clock = clock.Add(30 * time.Second)
	pool.set("desk", serf.StatusAlive, sampledTags(t, id, 9, clock))
	if rec := reconcile(); rec.Metrics.CPUCoresAvailable != 9 {
		t.Fatalf("gossip newer than the push: %v cores, want gossip's 9", rec.Metrics.CPUCoresAvailable)
	}
	// Serf calls it failed; a fresh push does not bring it back.
	clock = clock.Add(10 * time.Second)
	pool.set("desk", serf.StatusFailed, nil)
	if _, err := r.overlay.Put("desk", sampledTags(t, id, 1, clock), clock); err != nil {
		t.Fatal(err)
	}
	if rec := reconcile(); rec.Status != consensus.StatusSuspect {
		t.Fatalf("failed member with a fresh push: %s, want suspect", rec.Status)
	}
}

// A new leader whose gossip view lags what its predecessor wrote (from a
// push) does not write the older sample back over it, nor the asleep
// state that came with it; a sample much older than the registry's is a
// clock that stepped back and is taken.
func TestReconciler_OlderGossipDoesNotSupersedeTheRegistry(t *testing.T) {
	st := singleStore(t)
	pool := &scriptedPool{members: map[string]serf.Member{}}
	clock := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	const id = "33333333-3333-4333-8333-333333333333"
	reconcile := func(r *reconciler) consensus.Record { t.Helper(); return reconcileRecord(t, r, st, id) }
	// The first leader had the push: 2 cores, sampled at +30 s.
	first := pushReconciler(t, pool, st, &clock)
	pool.set("desk", serf.StatusAlive, sampledTags(t, id, 16, clock))
	reconcile(first)
	clock = clock.Add(30 * time.Second)
	if _, err := first.overlay.Put("desk", sampledTags(t, id, 2, clock), clock); err != nil {
		t.Fatal(err)
	}
	if rec := reconcile(first); rec.Metrics.CPUCoresAvailable != 2 {
		t.Fatalf("first leader wrote %v cores, want the pushed 2", rec.Metrics.CPUCoresAvailable)
	}

	// A new leader still gossips the sample of +0 s, now saying asleep.
	clock = clock.Add(5 * time.Second)
	older, err := gossip.EncodeTags(nil, gossip.NodeInfo{AgentID: id, Roles: []string{gossip.RoleDesktop}, Asleep: true,
		Sample: probe.Sample{CPUCoresPhysical: 16, CPUCoresAvailable: 16, GPUType: probe.GPUTypeNone, TakenAt: clock.Add(-35 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	pool.set("desk", serf.StatusAlive, older)
	second := pushReconciler(t, pool, st, &clock)
	if rec := reconcile(second); rec.Metrics.CPUCoresAvailable != 2 || rec.Status != consensus.StatusOnline {
		t.Fatalf("new leader with older gossip: %v cores, %s; want the registry's 2, online", rec.Metrics.CPUCoresAvailable, rec.Status)
	}
	// Gossip catches up: taken.
	clock = clock.Add(30 * time.Second)
	pool.set("desk", serf.StatusAlive, sampledTags(t, id, 5, clock))
	if rec := reconcile(second); rec.Metrics.CPUCoresAvailable != 5 {
		t.Fatalf("newer gossip: %v cores, want 5", rec.Metrics.CPUCoresAvailable)
	}
	// The desktop's clock steps back an hour: its samples are taken.
	pool.set("desk", serf.StatusAlive, sampledTags(t, id, 7, clock.Add(-time.Hour)))
	if rec := reconcile(second); rec.Metrics.CPUCoresAvailable != 7 {
		t.Fatalf("after a clock step back: %v cores, want 7", rec.Metrics.CPUCoresAvailable)
	}
}
