package dispatch_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testnet"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node/dispatch"
	"github.com/chiffon-dev/chiffon/node/worker"
)

// extraDesktop starts another desktop's runner behind real HTTP; its
// handler appends "work_id attempt" to the returned marker file before
// running script.
func extraDesktop(t *testing.T, script string) (*worker.Runner, string, string) {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "ran")
	r, addr := serveDesktop(t, `echo "$CHIFFON_WORK_ID $CHIFFON_WORK_ATTEMPT" >> `+marker+`; `+script,
		worker.DefaultConfig().Concurrency)
	return r, addr, marker
}

func readMarker(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// TestDispatch_UnreachableDesktopWorkPlacedElsewhere cuts a desktop off
// from the leader only (gossip, here the registry, keeps it online): after
// UnreachableAfter of failed calls the leader marks it unreachable, fences
// its attempt and places the item on the other desktop; when the cut
// heals, the leader's probe clears the mark and work goes there again.
func TestDispatch_UnreachableDesktopWorkPlacedElsewhere(t *testing.T) {
	const unreachableAfter = 1500 * time.Millisecond
	h, fb := fakeHarness(t, `cat`, func(c *dispatch.Config) {
		c.UnreachableAfter, c.Lease = unreachableAfter, 200*time.Millisecond
	})
	_, backend, marker := extraDesktop(t, `cat`)
	proxy := testnet.NewProxy(t, backend)
	proxy.Blackhole(true)
	// "a-cut" sorts before "desk-1": equal CPU-only work goes to it first.
	h.addDesktop("a-cut", proxy.Addr(), consensus.StatusOnline)
	cutAt := time.Now()
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "w1", consensus.Requirements{}, `1`)})
	h.waitWork("w1", 10*time.Second, func(w consensus.WorkItem) bool { return w.AgentID == "a-cut" })
	w := h.waitWork("w1", 30*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.AgentID != "desk-1" || w.Attempts != 2 {
		t.Fatalf("work %+v; want it succeeded on desk-1, attempt 2", w)
	}
	if took := time.Since(cutAt); took < unreachableAfter {
		t.Fatalf("placed again %s after the cut, before the %s bound", took, unreachableAfter)
	}
	n, _ := h.store.FSM().Get("a-cut")
	if n.Reachable() || n.Status != consensus.StatusOnline {
		t.Fatalf("a-cut is %s, unreachable since %v; want online and unreachable", n.Status, n.UnreachableSince)
	}
	if got := readMarker(marker); got != "" {
		t.Fatalf("the cut desktop ran %q", got)
	}

	proxy.Blackhole(false)
	testwait.Until(t, 10*time.Second, "a-cut reachable again", func() (bool, string) {
		n, _ := h.store.FSM().Get("a-cut")
		return n.Reachable(), n.UnreachableSince.String()
	})
	// Placement takes it again: equal nodes, smallest agent ID.
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "w2", consensus.Requirements{}, `2`)})
	w = h.waitWork("w2", 20*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.AgentID != "a-cut" {
		t.Fatalf("work %+v; want it succeeded on a-cut", w)
	}
	if got := readMarker(marker); got != "w2 1" {
		t.Fatalf("the healed desktop ran %q, want w2 attempt 1 only", got)
	}
}

// TestDispatch_SupersededResultIgnored fences a running attempt (its node
// is reported offline while the leader can still reach it): the result it
// then reports is ignored, the desktop is told to drop it, and the item's
// result is the next attempt's.
func TestDispatch_SupersededResultIgnored(t *testing.T) {
	release := filepath.Join(t.TempDir(), "go")
	h, fb := fakeHarness(t, `cat`, nil)
	desk1, _ := h.store.FSM().Get("desk-1")
	h.addDesktop("desk-1", desk1.WorkAddr, consensus.StatusOffline) // no other place to go, for now
	slow, addr, marker := extraDesktop(t, `while [ ! -f `+release+` ]; do sleep 0.02; done; echo zombie`)
	h.addDesktop("a-slow", addr, consensus.StatusOnline)
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "w", consensus.Requirements{}, `"fresh"`)})
	h.waitWork("w", 10*time.Second, func(w consensus.WorkItem) bool { return w.Status == consensus.WorkRunning })
	h.addDesktop("a-slow", addr, consensus.StatusOffline)
	h.waitWork("w", 10*time.Second, func(w consensus.WorkItem) bool { return w.Status == consensus.WorkPending })
	// Attempt 1 is fenced; now it finishes and its tracker reports it.
	if err := writeFile(release); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, "a-slow told to drop attempt 1", func() (bool, string) {
		st, held := slow.Get("w", 0)
		return !held, st.Status
	})
	if w, _ := h.store.FSM().GetWork("w"); w.Status != consensus.WorkPending || w.Attempts != 1 || w.Output != "" {
		t.Fatalf("the fenced attempt's result was recorded: %+v", w)
	}
	h.addDesktop("desk-1", desk1.WorkAddr, consensus.StatusOnline)
	w := h.waitWork("w", 20*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.AgentID != "desk-1" || w.Attempts != 2 || w.Output != `"fresh"` {
		t.Fatalf("work %+v; want attempt 2's result from desk-1", w)
	}
	if got := readMarker(marker); got != "w 1" {
		t.Fatalf("a-slow ran %q, want attempt 1 once", got)
	}
	msgs := fb.WaitMessages("chiffon.results", 1, 5*time.Second)
	if len(msgs) != 1 || strings.Contains(string(msgs[0].Body), "zombie") {
		t.Fatalf("results %q; want one, attempt 2's", msgs)
	}
}
