package consensus

import (
	"fmt"
	"math"
	"testing"
	"time"
)

func TestDecayFlapScore(t *testing.T) {
	const hl = 10 * time.Minute
	for _, tt := range []struct {
		score    float64
		elapsed  time.Duration
		halfLife time.Duration
		want     float64
	}{
		{1, 0, hl, 1},
		{1, hl, hl, 0.5},
		{4, 2 * hl, hl, 1},
		{3, 30 * time.Minute, hl, 0.375},
		{1, 5 * time.Minute, hl, 1 / math.Sqrt2},
		{2, -time.Minute, hl, 2},          // a clock that went back decays nothing
		{1, 7 * hl, hl, 0},                // 1/128 is below minFlapScore: stable
		{1, 6 * hl, hl, 1.0 / 64},         // 1/64 still counts
		{0, hl, hl, 0},                    // nothing to decay
		{5, time.Second, 0, 0},            // no half-life: no memory
		{1, 24 * time.Hour, time.Hour, 0}, // a day at an hour's half-life
		{10, time.Hour, time.Hour, 5},     // other half-lives
	} {
		t.Run(fmt.Sprintf("%v_after_%s_hl_%s", tt.score, tt.elapsed, tt.halfLife), func(t *testing.T) {
			if got := DecayFlapScore(tt.score, tt.elapsed, tt.halfLife); math.Abs(got-tt.want) > 1e-9 {
				t.Fatalf("DecayFlapScore(%v, %s, %s) = %v, want %v", tt.score, tt.elapsed, tt.halfLife, got, tt.want)
			}
		})
	}
}

func TestIsFlap(t *testing.T) {
	for _, tt := range []struct {
		from, to Status
		want     bool
	}{
		{StatusSuspect, StatusOnline, true},
		{StatusOffline, StatusOnline, true},
		{StatusOnline, StatusSuspect, false}, // counted when it comes back
		{StatusAsleep, StatusOnline, false},  // sleep is not failure
		{StatusLeft, StatusOnline, false},    // a restart after a clean stop
		{StatusSuspect, StatusOffline, false},
	} {
		if got := IsFlap(tt.from, tt.to); got != tt.want {
			t.Errorf("IsFlap(%s, %s) = %v, want %v", tt.from, tt.to, got, tt.want)
		}
	}
}

// TestRecord_RecordTransition: flaps add 1 to the score decayed to the
// change, other changes only decay it, and the history keeps the last
// MaxHistory changes, oldest first, without touching the slice it was
// cloned from.
func TestRecord_RecordTransition(t *testing.T) {
	const hl = 10 * time.Minute
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	r := Record{AgentID: "a", Status: StatusOnline, StatusChangedAt: t0}
	r.RecordTransition("", time.Time{}, t0, hl) // a new node
	if r.FlapScore != 0 || len(r.History) != 0 {
		t.Fatalf("new node: score %v history %v", r.FlapScore, r.History)
	}
	at := t0
	change := func(to Status, after time.Duration) {
		from, prevAt := r.Status, r.StatusChangedAt
		at = at.Add(after)
		r.Status, r.StatusChangedAt = to, at
		r.RecordTransition(from, prevAt, at, hl)
	}
	change(StatusSuspect, time.Minute)
	if r.FlapScore != 0 {
		t.Fatalf("going suspect scored %v", r.FlapScore)
	}
	change(StatusOnline, 10*time.Second)
	if r.FlapScore != 1 {
		t.Fatalf("first flap: score %v, want 1", r.FlapScore)
	}
	change(StatusSuspect, 10*time.Minute) // one half-life later
	change(StatusOnline, 0)
	if r.FlapScore != 1.5 {
		t.Fatalf("second flap a half-life later: score %v, want 1.5", r.FlapScore)
	}
	if got := r.FlapScoreAt(at.Add(20*time.Minute), hl); got != 0.375 {
		t.Fatalf("FlapScoreAt two half-lives on = %v, want 0.375", got)
	}
	change(StatusAsleep, 20*time.Minute)
	change(StatusOnline, 10*time.Minute)
	if want := 1.5 / 4 / 2; math.Abs(r.FlapScore-want) > 1e-12 {
		t.Fatalf("after sleeping: score %v, want %v (decayed, no flap)", r.FlapScore, want)
	}
	if len(r.History) != 6 || r.History[0] != (Transition{At: t0.Add(time.Minute), From: StatusOnline, To: StatusSuspect}) ||
		r.History[5].To != StatusOnline || r.History[5].From != StatusAsleep {
		t.Fatalf("history %+v", r.History)
	}
	shared := r.Clone()
	for range 3 * MaxHistory {
		change(StatusSuspect, time.Second)
		change(StatusOnline, time.Second)
	}
	if len(r.History) != MaxHistory || !r.History[MaxHistory-1].At.Equal(at) || !r.History[0].At.Equal(at.Add(-(MaxHistory-1)*time.Second)) {
		t.Fatalf("bounded history: %d entries, %+v", len(r.History), r.History)
	}
	if len(shared.History) != 6 || shared.History[5].From != StatusAsleep {
		t.Fatalf("the clone's history changed: %+v", shared.History)
	}
	if r.FlapScore < 25 {
		t.Fatalf("30 flaps within a minute scored %v", r.FlapScore)
	}
}
