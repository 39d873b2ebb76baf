package dispatch

import (
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
)

// TestPlace_PrefersStableDesktops: among desktops that fit, one that has
// flapped (its decayed flap score ≥ 1) gets work only when no steadier one
// fits, whatever best fit says; once its score has decayed below 1 it is
// as good as any again.
func TestPlace_PrefersStableDesktops(t *testing.T) {
	const hl = 10 * time.Minute
	// a is the best fit (less free VRAM) but flapped twice, just now.
	flapper := with(desk("a", 8, 10), func(r *consensus.Record) { r.FlapScore, r.StatusChangedAt = 2, t0 })
	steady := desk("b", 8, 20)
	once := with(desk("c", 8, 12), func(r *consensus.Record) { r.FlapScore, r.StatusChangedAt = 1.2, t0 })
	for _, tt := range []struct {
		name  string
		nodes []consensus.Record
		now   time.Time
		work  consensus.WorkItem
		want  string
	}{
		{"stable desktop over a better fit that flaps", []consensus.Record{flapper, steady}, t0, pending("w", 8, 1), "b"},
		{"the flapper when nothing else fits", []consensus.Record{flapper, desk("d", 8, 5)}, t0, pending("w", 8, 1), "a"},
		{"fewer flaps first", []consensus.Record{flapper, once}, t0, pending("w", 8, 1), "c"},
		{"an old flap no longer counts", []consensus.Record{flapper, steady}, t0.Add(2 * hl), pending("w", 8, 1), "a"},
		{"GPU-less work too", []consensus.Record{with(desk("a", 8), func(r *consensus.Record) { r.FlapScore, r.StatusChangedAt = 3, t0 }), desk("b", 4)},
			t0, pending("w", 0, 1), "b"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Place(WithFlapScoresAt(tt.nodes, tt.now, hl), nil, tt.work)
			if !ok || got.AgentID != tt.want {
				t.Fatalf("Place = %+v, %v; want %s", got, ok, tt.want)
			}
		})
	}
	// Plan, as the dispatcher calls it, places on the steady desktop.
	ts := Plan(t0, WithFlapScoresAt([]consensus.Record{flapper, steady}, t0, hl), []consensus.WorkItem{pending("w", 8, 1)}, time.Minute)
	if len(ts) != 1 || ts[0].AgentID != "b" {
		t.Fatalf("Plan = %+v; want w assigned to b", ts)
	}
}

func TestFlapBucket(t *testing.T) {
	for _, tt := range []struct {
		score float64
		want  int
	}{{0, 0}, {0.99, 0}, {1, 1}, {1.5, 1}, {2.01, 2}, {1e9, 1 << 20}} {
		if got := FlapBucket(tt.score); got != tt.want {
			t.Errorf("FlapBucket(%v) = %d, want %d", tt.score, got, tt.want)
		}
	}
}
