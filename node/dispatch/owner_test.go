package dispatch_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node/dispatch"
	"github.com/chiffon-dev/chiffon/node/worker"
)

// TestDispatch_OwnerRequeueHandsWorkBackUncounted: a desktop whose owner
// comes back (-owner-action requeue) stops its handler and hands the item
// back; the leader places it elsewhere without counting the attempt (one
// attempt allowed, two made), never on the owner-active desktop, and the
// item runs to its end once, after one hand-back (not bounced between the
// leader and the desktop while the registry catches up).
func TestDispatch_OwnerRequeueHandsWorkBackUncounted(t *testing.T) {
	h, fb := fakeHarness(t, `cat`, func(c *dispatch.Config) { c.MaxAttempts = 1 })
	gate := filepath.Join(t.TempDir(), "go")
	owned, addr, marker := extraDesktop(t, `while [ ! -f `+gate+` ]; do sleep 0.02; done; cat`)
	// "a-own" sorts before "desk-1": equal CPU-only work goes to it first.
	h.addDesktop("a-own", addr, consensus.StatusOnline)
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "w1", consensus.Requirements{}, `1`)})
	h.waitWork("w1", 10*time.Second, func(w consensus.WorkItem) bool {
		return w.AgentID == "a-own" && w.Status == consensus.WorkRunning
	})
	testwait.Until(t, 10*time.Second, "the handler starts on a-own", func() (bool, string) {
		got := readMarker(marker)
		return got == "w1 1", got
	})

	// The owner sits down: the runner stops the handler and hands the item
	// back. The registry does not know yet (gossip is slower than the
	// handover, and here never comes): the leader keeps the item off a-own
	// for a while by itself, instead of placing it back there.
	if k, err := owned.OwnerActive(worker.OwnerRequeue); err != nil || k != 1 {
		t.Fatalf("OwnerActive(requeue) = %d, %v", k, err)
	}
	if err := writeFile(gate); err != nil {
		t.Fatal(err)
	}
	w := h.waitWork("w1", 20*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.AgentID != "desk-1" || w.Attempts != 2 || w.MaxAttempts != 2 {
		t.Fatalf("work %+v; want it succeeded on desk-1, attempt 2 of 2 (one hand-back, not counted; a bounce would add attempts)", w)
	}
	if got := readMarker(marker); got != "w1 1" {
		t.Fatalf("the owner's desktop ran %q, want only attempt 1 (stopped)", got)
	}
	if got := h.runs(); len(got) != 1 || got[0] != "w1" {
		t.Fatalf("desk-1 ran %v, want w1 once", got)
	}
}

func TestYieldHints_UntilTheRegistryKnows(t *testing.T) {
	y := dispatch.NewYieldHintsForTest()
	now := time.Now()
	rec := func(owner string) []consensus.Record {
		return []consensus.Record{{AgentID: "a", Owner: owner}, {AgentID: "b"}}
	}
	y.Mark("a", now)
	if got := y.Apply(now.Add(time.Second), rec("")); got[0].Owner != consensus.OwnerActive || got[1].Owner != "" {
		t.Fatalf("within the hint: %+v; want a active, b untouched", got)
	}
	// Gossip caught up: the registry says active, and later idle.
	y.Apply(now.Add(time.Second), rec(consensus.OwnerActive))
	if got := y.Apply(now.Add(2*time.Second), rec(consensus.OwnerIdle)); got[0].Owner != consensus.OwnerIdle {
		t.Fatalf("after the registry knew: %+v; want the registry's idle", got)
	}
	// A hint the registry never confirms expires.
	y.Mark("b", now)
	if got := y.Apply(now.Add(10*time.Second), rec("")); got[1].Owner != "" {
		t.Fatalf("after the hint's TTL: %+v; want b as the registry has it", got)
	}
}
