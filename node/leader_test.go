package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/probe"
)

// scriptedPool is a gossip pool the test edits directly.
type scriptedPool struct {
	mu      sync.Mutex
	members map[string]serf.Member
	lag     time.Duration // FailureLag; 4 s when zero
}

func (p *scriptedPool) Members() []serf.Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []serf.Member
	for _, m := range p.members {
		out = append(out, m)
	}
	return out
}

func (p *scriptedPool) FailureLag() time.Duration {
	if p.lag == 0 {
		return 4 * time.Second
	}
	return p.lag
}

func (p *scriptedPool) set(name string, status serf.MemberStatus, tags map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.members[name]
	if !ok {
		m = serf.Member{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: 7946}
	}
	m.Status = status
	if tags != nil {
		m.Tags = tags
	}
	p.members[name] = m
}

func (p *scriptedPool) remove(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.members, name)
}

// singleStore is a one-voter in-memory raft store that leads.
func singleStore(t *testing.T) *consensus.Store {
	t.Helper()
	sc := consensus.DefaultConfig()
	sc.NodeID, sc.InMemory, sc.BindAddr = "leader-id", true, "127.0.0.1:0"
	st, err := consensus.New(sc)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Bootstrap(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "single-node leader", st.IsLeader)
	return st
}

func deskTags(id string, freeVRAM float64) map[string]string {
	tags, err := gossip.EncodeTags(nil, gossip.NodeInfo{AgentID: id, Roles: []string{gossip.RoleDesktop},
		Sample: probe.Sample{CPUCoresPhysical: 8, CPUCoresAvailable: 8, GPUType: "nvidia", GPUVRAMTotalGB: 24,
			GPUVRAMAvailableGB: freeVRAM, GPUs: []probe.GPU{{VRAMTotalGB: 24, VRAMFreeGB: freeVRAM}}}})
	if err != nil {
		panic(err)
	}
	return tags
}

// TestReconciler_LivenessTimeline drives one desktop through every status
// on a fake clock: each step is what the registry must say at that moment.
func TestReconciler_LivenessTimeline(t *testing.T) {
	st := singleStore(t)
	pool := &scriptedPool{members: map[string]serf.Member{}}
	clock := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	live := LivenessConfig{SuspicionTimeout: 90 * time.Second, ReapAfter: time.Hour, RefreshInterval: 30 * time.Second, DeadServerAfter: time.Hour}
	newR := func() *reconciler {
		return newReconciler(live, pool, st, testlog.New(t, slog.LevelDebug), func() time.Time { return clock })
	}
	r := newR()
	const id = "11111111-1111-4111-8111-111111111111"
	step := func(advance time.Duration, want consensus.Status) consensus.Record {
		t.Helper()
		clock = clock.Add(advance)
		if _, err := r.reconcile(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		rec, ok := st.FSM().Get(id)
		if want == "" {
			if ok {
				t.Fatalf("at %s: record still there: %+v", clock.Format(time.TimeOnly), rec)
			}
			return rec
		}
		if !ok || rec.Status != want {
			t.Fatalf("at %s: status %q, want %q", clock.Format(time.TimeOnly), rec.Status, want)
		}
		return rec
	}

	pool.set("desk", serf.StatusAlive, deskTags(id, 20))
	joined := step(0, consensus.StatusOnline)
	if !joined.FirstSeenAt.Equal(clock) || joined.Metrics.GPUVRAMMaxFreeGB != 20 {
		t.Fatalf("new record = %+v", joined)
	}
	// Unchanged metrics are refreshed only every RefreshInterval.
	if rec := step(10*time.Second, consensus.StatusOnline); !rec.LastHeartbeatAt.Equal(joined.LastHeartbeatAt) {
		t.Fatalf("heartbeat moved without new metrics: %v", rec.LastHeartbeatAt)
	}
	if rec := step(25*time.Second, consensus.StatusOnline); !rec.LastHeartbeatAt.Equal(clock) {
		t.Fatalf("heartbeat not refreshed after 35 s: %v", rec.LastHeartbeatAt)
	}

	// serf reports it failed: memberlist's suspicion (FailureLag, 4 s here)
	// ran first, so it fell silent 4 s before this moment.
	pool.set("desk", serf.StatusFailed, nil)
	rec := step(time.Second, consensus.StatusSuspect)
	silent := clock.Add(-4 * time.Second)
	if !rec.LastHeartbeatAt.Equal(silent) {
		t.Fatalf("suspect record's last_heartbeat_at = %v, want %v (failed minus the failure lag)", rec.LastHeartbeatAt, silent)
	}
	if want := silent.Add(90 * time.Second); !r.nextOffline.Equal(want) {
		t.Fatalf("next offline deadline = %v, want %v", r.nextOffline, want)
	}
	step(30*time.Second, consensus.StatusSuspect)

	// The leader changes: a new reconciler knows only the registry. It must
	// neither restart the 90 s wait nor call the node offline early.
	r = newR()
	step(55*time.Second, consensus.StatusSuspect) // 89 s since it fell silent
	off := step(time.Second, consensus.StatusOffline)
	if got := off.StatusChangedAt.Sub(silent); got != 90*time.Second {
		t.Fatalf("offline %s after it fell silent, want 90s", got)
	}
	if !r.nextOffline.IsZero() {
		t.Fatalf("next offline deadline = %v with no suspect node", r.nextOffline)
	}

	// It answers again: online at once, with fresh metrics.
	pool.set("desk", serf.StatusAlive, deskTags(id, 7))
	if rec := step(time.Minute, consensus.StatusOnline); rec.Metrics.GPUVRAMMaxFreeGB != 7 || !rec.FirstSeenAt.Equal(joined.FirstSeenAt) {
		t.Fatalf("back online: %+v", rec)
	}

	// Graceful stop: left at once; reaped after ReapAfter, even though serf
	// still lists the member, and not recreated afterwards.
	pool.set("desk", serf.StatusLeft, nil)
	step(time.Second, consensus.StatusLeft)
	step(59*time.Minute, consensus.StatusLeft)
	step(time.Minute, "")
	step(time.Second, "")

	// A node the registry has but serf forgot (reaped by serf, or never seen
	// by this leader): the clock runs from the registry.
	const id2 = "22222222-2222-4222-8222-222222222222"
	pool.set("other", serf.StatusAlive, deskTags(id2, 1))
	if _, err := r.reconcile(time.Second); err != nil {
		t.Fatal(err)
	}
	pool.remove("other")
	r = newR()
	clock = clock.Add(time.Second)
	r.reconcile(time.Second)
	if rec, _ := st.FSM().Get(id2); rec.Status != consensus.StatusSuspect {
		t.Fatalf("vanished member: %q, want suspect", rec.Status)
	}
	clock = clock.Add(90 * time.Second)
	r.reconcile(time.Second)
	if rec, _ := st.FSM().Get(id2); rec.Status != consensus.StatusOffline {
		t.Fatalf("vanished member after 90 s: %q, want offline", rec.Status)
	}
}

// TestReconciler_MissedLeaveBecomesLeft: serf's leave is best effort, so a
// leader may hear a leaving member go silent first and serf calls it
// failed; when the leave intent arrives later (rebroadcast or push-pull),
// serf calls it left, and so must the registry, from suspect or offline.
func TestReconciler_MissedLeaveBecomesLeft(t *testing.T) {
	st := singleStore(t)
	pool := &scriptedPool{members: map[string]serf.Member{}}
	clock := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	live := LivenessConfig{SuspicionTimeout: 90 * time.Second, ReapAfter: time.Hour, RefreshInterval: 30 * time.Second, DeadServerAfter: time.Hour}
	r := newReconciler(live, pool, st, testlog.New(t, slog.LevelDebug), func() time.Time { return clock })
	ids := map[string]string{"early": "44444444-4444-4444-8444-444444444444", "late": "55555555-5555-4555-8555-555555555555"}
	for name, id := range ids {
		pool.set(name, serf.StatusAlive, deskTags(id, 8))
	}
	step := func(advance time.Duration) {
		t.Helper()
		clock = clock.Add(advance)
		if _, err := r.reconcile(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(name string, want consensus.Status) {
		t.Helper()
		if rec, _ := st.FSM().Get(ids[name]); rec.Status != want {
			t.Fatalf("%s is %q, want %q", name, rec.Status, want)
		}
	}
	step(0)
	pool.set("early", serf.StatusFailed, nil)
	pool.set("late", serf.StatusFailed, nil)
	step(time.Second)
	expect("early", consensus.StatusSuspect)
	pool.set("early", serf.StatusLeft, nil) // the intent came by push-pull
	step(30 * time.Second)
	expect("early", consensus.StatusLeft)
	expect("late", consensus.StatusSuspect)
	step(time.Minute)
	expect("late", consensus.StatusOffline)
	pool.set("late", serf.StatusLeft, nil)
	step(time.Second)
	expect("late", consensus.StatusLeft)
}

// TestLeaderLoop_OfflineAtDeadline runs the leader loop with a reconcile
// interval of an hour: a failed desktop must still turn offline when its
// suspicion timeout runs out, woken by that deadline and not by a tick.
func TestLeaderLoop_OfflineAtDeadline(t *testing.T) {
	st := singleStore(t)
	pool := &scriptedPool{members: map[string]serf.Member{}, lag: time.Millisecond}
	const timeout = 500 * time.Millisecond
	live := LivenessConfig{SuspicionTimeout: timeout, ReapAfter: time.Hour, RefreshInterval: time.Hour, DeadServerAfter: time.Hour}
	r := newReconciler(live, pool, st, testlog.New(t, slog.LevelDebug), time.Now)
	const id = "33333333-3333-4333-8333-333333333333"
	pool.set("desk", serf.StatusAlive, deskTags(id, 8))

	ctx, cancel := context.WithCancel(context.Background())
	wake := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		leaderLoop(ctx, r, wake, time.Hour, 10*time.Millisecond)
	}()
	t.Cleanup(func() { cancel(); <-done })
	status := func() consensus.Status {
		rec, _ := st.FSM().Get(id)
		return rec.Status
	}
	waitFor(t, 5*time.Second, "desktop online", func() bool { return status() == consensus.StatusOnline })

	// serf reports it failed: the gossip event wakes the loop once.
	pool.set("desk", serf.StatusFailed, nil)
	wake <- struct{}{}
	waitFor(t, 5*time.Second, "desktop suspect", func() bool {
		s := status()
		return s == consensus.StatusSuspect || s == consensus.StatusOffline
	})
	waitFor(t, 5*time.Second, "desktop offline without a tick", func() bool { return status() == consensus.StatusOffline })
	rec, _ := st.FSM().Get(id)
	if silent := rec.StatusChangedAt.Sub(rec.LastHeartbeatAt); silent < timeout || silent > timeout+time.Second {
		t.Fatalf("offline %s after it fell silent; want %s (+ scheduling)", silent, timeout)
	}
}

// fakeServers records raft membership calls.
type fakeServers struct {
	*consensus.Store
	mu      sync.Mutex
	servers []consensus.Server
	calls   []string
}

func (f *fakeServers) Servers() ([]consensus.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]consensus.Server(nil), f.servers...), nil
}

func (f *fakeServers) AddVoter(id, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "add "+id+" "+addr)
	f.servers = append(f.servers, consensus.Server{ID: id, Address: addr, Voter: true})
	return nil
}

func (f *fakeServers) RemoveServer(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "remove "+id)
	for i, s := range f.servers {
		if s.ID == id {
			f.servers = append(f.servers[:i], f.servers[i+1:]...)
			break
		}
	}
	return nil
}

func TestReconciler_RaftMembership(t *testing.T) {
	st := &fakeServers{Store: singleStore(t), servers: []consensus.Server{{ID: "leader-id", Address: "10.0.0.1:8300", Voter: true}}}
	pool := &scriptedPool{members: map[string]serf.Member{}}
	clock := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	live := LivenessConfig{SuspicionTimeout: 90 * time.Second, ReapAfter: time.Hour, RefreshInterval: time.Minute, DeadServerAfter: 10 * time.Minute,
		VoterRoleGrace: time.Hour}
	r := newReconciler(live, pool, st, slog.New(slog.DiscardHandler), func() time.Time { return clock })
	r.verify = func(name, addr string) error { return nil } // every candidate proves it (voters_test.go checks refusals)
	orch := func(id, addr string) map[string]string {
		tags, _ := gossip.EncodeTags(nil, gossip.NodeInfo{AgentID: id, Roles: []string{gossip.RoleOrchestrator}, RaftAddr: addr})
		return tags
	}
	run := func(advance time.Duration) []string {
		clock = clock.Add(advance)
		st.mu.Lock()
		st.calls = nil
		st.mu.Unlock()
		if err := r.reconcileServers(clock); err != nil {
			t.Fatal(err)
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		return append([]string(nil), st.calls...)
	}
	pool.set("o2", serf.StatusAlive, orch("o2", "10.0.0.2:8300"))
	pool.set("o3", serf.StatusAlive, orch("o3", "10.0.0.3:8300"))
	if got := fmt.Sprint(run(0)); got != "[add o2 10.0.0.2:8300 add o3 10.0.0.3:8300]" && got != "[add o3 10.0.0.3:8300 add o2 10.0.0.2:8300]" {
		t.Fatalf("calls = %s", got)
	}
	if got := run(time.Second); len(got) != 0 {
		t.Fatalf("second round changed membership again: %v", got)
	}
	// A new address (a reboot with DHCP) updates the voter.
	pool.set("o2", serf.StatusAlive, orch("o2", "10.0.0.22:8300"))
	if got := fmt.Sprint(run(time.Second)); got != "[add o2 10.0.0.22:8300]" {
		t.Fatalf("calls = %s", got)
	}
	// Failed: kept (a reboot is not a removal) until DeadServerAfter.
	pool.set("o3", serf.StatusFailed, nil)
	if got := run(time.Second); len(got) != 0 {
		t.Fatalf("failed server removed at once: %v", got)
	}
	if got := run(9 * time.Minute); len(got) != 0 {
		t.Fatalf("failed server removed early: %v", got)
	}
	if got := fmt.Sprint(run(time.Minute)); got != "[remove o3]" {
		t.Fatalf("calls = %s", got)
	}
	// Left: removed at once.
	pool.set("o2", serf.StatusLeft, nil)
	if got := fmt.Sprint(run(time.Second)); got != "[remove o2]" {
		t.Fatalf("calls = %s", got)
	}
}

// TestReconciler_AsleepIsNotFailure: a desktop that says it is going to
// sleep (tag pw=s) is asleep, stays asleep while serf calls it failed or
// forgets it, on this leader and the next, with no suspicion clock; it is
// online again with fresh metrics as soon as it answers awake.
func TestReconciler_AsleepIsNotFailure(t *testing.T) {
	st := singleStore(t)
	pool := &scriptedPool{members: map[string]serf.Member{}}
	clock := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	live := LivenessConfig{SuspicionTimeout: 90 * time.Second, ReapAfter: time.Hour, RefreshInterval: 30 * time.Second, DeadServerAfter: time.Hour}
	newR := func() *reconciler {
		return newReconciler(live, pool, st, testlog.New(t, slog.LevelDebug), func() time.Time { return clock })
	}
	r := newR()
	const id = "66666666-6666-4666-8666-666666666666"
	step := func(advance time.Duration, want consensus.Status) consensus.Record {
		t.Helper()
		clock = clock.Add(advance)
		if _, err := r.reconcile(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		rec, ok := st.FSM().Get(id)
		if !ok || rec.Status != want {
			t.Fatalf("at %s: status %q, want %q", clock.Format(time.TimeOnly), rec.Status, want)
		}
		return rec
	}
	sleepy := func(free float64) map[string]string {
		tags := deskTags(id, free)
		tags[gossip.TagPower] = "s"
		return tags
	}
	pool.set("desk", serf.StatusAlive, deskTags(id, 20))
	step(0, consensus.StatusOnline)
	pool.set("desk", serf.StatusAlive, sleepy(20))
	step(time.Second, consensus.StatusAsleep)
	pool.set("desk", serf.StatusFailed, nil) // the machine suspended
	step(time.Second, consensus.StatusAsleep)
	if !r.nextOffline.IsZero() {
		t.Fatalf("an asleep node has an offline deadline: %v", r.nextOffline)
	}
	step(10*time.Minute, consensus.StatusAsleep)
	r = newR() // a new leader
	step(time.Hour, consensus.StatusAsleep)
	pool.remove("desk") // serf reaped it
	step(2*time.Hour, consensus.StatusAsleep)

	pool.set("desk", serf.StatusAlive, deskTags(id, 7)) // resumed
	if rec := step(time.Second, consensus.StatusOnline); rec.Metrics.GPUVRAMMaxFreeGB != 7 || !rec.LastHeartbeatAt.Equal(clock) {
		t.Fatalf("awake again: %+v", rec)
	}
	// A machine that sleeps without notice is a failure, as before.
	pool.set("desk", serf.StatusFailed, nil)
	step(time.Second, consensus.StatusSuspect)
	step(90*time.Second, consensus.StatusOffline)
}
