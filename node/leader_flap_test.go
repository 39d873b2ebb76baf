package node

import (
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/consensus/consensustest"
	"github.com/chiffon-dev/chiffon/internal/testlog"
)

// TestReconciler_FlapScoreSurvivesFailover: a desktop that flaps
// (online → suspect → online) gets a flap score and a status history
// from the leader's reconciler; both are in the replicated registry, so
// the leader elected after the first one dies carries them on, decaying
// the score from where the first left it. An unchanged desktop causes no
// raft write, however its score decays.
func TestReconciler_FlapScoreSurvivesFailover(t *testing.T) {
	// The raft servers have no gossip members here; VoterRoleGrace keeps
	// the reconciler from removing them.
	c := consensustest.MakeCluster(t, 3, consensustest.Options{})
	first := c.WaitForLeader(t, 10*time.Second)
	pool := &scriptedPool{members: map[string]serf.Member{}}
	clock := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	live := LivenessConfig{SuspicionTimeout: 90 * time.Second, ReapAfter: time.Hour, RefreshInterval: time.Hour,
		DeadServerAfter: time.Hour, VoterRoleGrace: 24 * time.Hour, FlapHalfLife: 10 * time.Minute}
	leaderOf := func(i int) *reconciler {
		return newReconciler(live, pool, c.Store(i), testlog.New(t, slog.LevelDebug), func() time.Time { return clock })
	}
	r := leaderOf(first)
	const id = "66666666-6666-4666-8666-666666666666"
	step := func(advance time.Duration, status serf.MemberStatus) int {
		t.Helper()
		clock = clock.Add(advance)
		pool.set("laptop", status, deskTags(id, 8))
		n, err := r.reconcile(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	step(0, serf.StatusAlive)
	// Two flaps, a half-life apart: 1 decays to ½, plus 1.
	step(time.Minute, serf.StatusFailed)
	step(5*time.Second, serf.StatusAlive)
	step(10*time.Minute-10*time.Second, serf.StatusAlive)
	step(5*time.Second, serf.StatusFailed)
	step(5*time.Second, serf.StatusAlive)
	rec, _ := c.Store(first).FSM().Get(id)
	if math.Abs(rec.FlapScore-(1+math.Exp2(-10*time.Minute.Seconds()/(10*time.Minute).Seconds()))) > 1e-9 {
		t.Fatalf("score after two flaps %v, want 1.5", rec.FlapScore)
	}
	if len(rec.History) != 4 || rec.History[0].From != consensus.StatusOnline || rec.History[0].To != consensus.StatusSuspect ||
		rec.History[2].To != consensus.StatusSuspect || rec.History[3].To != consensus.StatusOnline || !rec.History[3].At.Equal(clock) {
		t.Fatalf("history %+v", rec.History)
	}
	// Nothing changes for 20 minutes: no raft entry, though the score
	// halves twice as seen by a reader.
	if n := step(20*time.Minute, serf.StatusAlive); n != 0 {
		t.Fatalf("a stable desktop cost %d raft entries", n)
	}
	if got, _ := c.Store(first).FSM().Get(id); got.FlapScore != rec.FlapScore || got.ModifyIndex != rec.ModifyIndex {
		t.Fatalf("stored score moved without a transition: %v (index %d → %d)", got.FlapScore, rec.ModifyIndex, got.ModifyIndex)
	}
	if got := rec.FlapScoreAt(clock, live.FlapHalfLife); got != 0.375 {
		t.Fatalf("score read 20 min on = %v, want 0.375", got)
	}

	// The leader dies; the new one knows only the registry.
	c.Kill(first)
	second := c.WaitForLeader(t, 10*time.Second)
	c.WaitForIndex(t, rec.ModifyIndex, 10*time.Second) // as the leader's barrier would
	if got, _ := c.Store(second).FSM().Get(id); got.FlapScore != rec.FlapScore || len(got.History) != 4 {
		t.Fatalf("new leader's registry: score %v history %+v; want the old leader's", got.FlapScore, got.History)
	}
	r = leaderOf(second)
	step(0, serf.StatusAlive)
	step(time.Second, serf.StatusFailed)
	step(time.Second, serf.StatusAlive)
	got, _ := c.Store(second).FSM().Get(id)
	if want := 0.375*math.Exp2(-2.0/600) + 1; math.Abs(got.FlapScore-want) > 1e-9 {
		t.Fatalf("score after a flap under the new leader %v, want %v", got.FlapScore, want)
	}
	if len(got.History) != 6 || got.History[5].From != consensus.StatusSuspect {
		t.Fatalf("history under the new leader %+v", got.History)
	}
}
