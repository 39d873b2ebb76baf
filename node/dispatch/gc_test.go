package dispatch

import (
	"slices"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
)

func TestExpiredWork(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	item := func(id string, published bool, age time.Duration) consensus.FinishedRef {
		return consensus.FinishedRef{WorkID: id, Published: published, FinishedAt: now.Add(-age)}
	}
	finished := []consensus.FinishedRef{
		item("new", true, time.Minute),
		item("day-old", true, 25*time.Hour),
		item("outbox-old", false, 48*time.Hour), // not yet published: kept
		item("hour-old", true, time.Hour),
		item("week-old", true, 7*24*time.Hour),
	}
	tests := []struct {
		name      string
		retention time.Duration
		max       int
		want      []string
	}{
		{"age only", 24 * time.Hour, 0, []string{"week-old", "day-old"}},
		{"cap keeps the newest", 24 * time.Hour, 1, []string{"week-old", "day-old", "hour-old"}},
		{"cap above the count", 24 * time.Hour, 10, []string{"week-old", "day-old"}},
		{"cap without old items", 30 * 24 * time.Hour, 2, []string{"week-old", "day-old"}},
		{"nothing to forget", 30 * 24 * time.Hour, 0, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := expiredWork(now, finished, tt.retention, tt.max)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("expiredWork = %v, want %v", got, tt.want)
			}
		})
	}
}
