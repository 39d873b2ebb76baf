package dispatch_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node/dispatch"
)

// TestBridge_RetentionMaxForgetsOldestResults runs 8 items through the
// bridge with at most 3 results retained: once every result is out, the
// registry keeps exactly the 3 that finished last.
func TestBridge_RetentionMaxForgetsOldestResults(t *testing.T) {
	h, fb := fakeHarness(t, `cat`, func(c *dispatch.Config) {
		c.RetentionMax, c.GCInterval = 3, 50*time.Millisecond
	})
	const n = 8
	for i := range n {
		fb.Publish("chiffon.work", dispatch.Message{Body: request(t, fmt.Sprintf("r%d", i), consensus.Requirements{}, `{}`)})
	}
	ms := fb.WaitMessages("chiffon.results", n, 30*time.Second)
	finished := map[string]time.Time{}
	for _, m := range ms {
		r := decodeResult(t, m.Body)
		finished[r.WorkID] = r.FinishedAt
	}
	if len(finished) != n {
		t.Fatalf("results for %d work_ids, want %d", len(finished), n)
	}
	ids := make([]string, 0, n)
	for id := range finished {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int { return finished[a].Compare(finished[b]) })
	want := ids[n-3:]
	slices.Sort(want)
	fsm := h.store.FSM()
	testwait.Until(t, 10*time.Second, fmt.Sprintf("the registry to keep the last 3 finished, %v", want), func() (bool, string) {
		var kept []string
		for _, w := range fsm.ListWork(nil) {
			kept = append(kept, w.WorkID)
		}
		slices.Sort(kept)
		return slices.Equal(kept, want), fmt.Sprint(kept)
	})
}
