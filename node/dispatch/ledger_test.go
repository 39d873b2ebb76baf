package dispatch

import (
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/fleet"
)

// Reserved gives the VRAM ledger each hold with its placement and start
// times: a running item's start, none for an item only assigned.
func TestReserved_VRAMHolds(t *testing.T) {
	run := placed("run", "a", 0, 8, 1)
	run.AssignedAt, run.StartedAt = t0, t0.Add(time.Second)
	asg := placed("asg", "a", 0, 4, 1)
	asg.Status, asg.AssignedAt, asg.StartedAt = consensus.WorkAssigned, t0.Add(2*time.Second), t0 // a stale start
	cpu := placed("cpu", "a", consensus.NoGPU, 0, 1)
	r := Reserved([]consensus.WorkItem{run, asg, cpu})["a"]
	want := []fleet.VRAMHold{{WorkID: "run", GB: 8, PlacedAt: t0, StartedAt: t0.Add(time.Second)},
		{WorkID: "asg", GB: 4, PlacedAt: t0.Add(2 * time.Second)}}
	got := r.VRAMHolds[0]
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || len(r.VRAMHolds) != 1 {
		t.Fatalf("holds %+v, want %+v on GPU 0 only", r.VRAMHolds, want)
	}
	if r.GPUVRAMGB[0] != 12 || r.Items != 3 {
		t.Fatalf("reservation %+v, want 12 GB on GPU 0 in 3 items", r)
	}
	// Taking a hold off leaves the caller's copy as it was.
	before := r.VRAMHolds[0]
	cp := r
	cp.add(run, 0, -1, time.Time{}, time.Time{})
	if len(cp.VRAMHolds[0]) != 1 || cp.VRAMHolds[0][0].WorkID != "asg" || cp.GPUVRAMGB[0] != 4 {
		t.Fatalf("after release: %+v", cp)
	}
	if len(before) != 2 || before[0].WorkID != "run" {
		t.Fatalf("release changed the earlier slice: %+v", before)
	}
}

// A GPU the ledger finds over-committed (placed work holds more than the
// sample saw free) takes no GPU work, not even work asking for no VRAM; a
// GPU with exactly nothing left still takes the latter, as before.
func TestEligible_OverCommittedGPU(t *testing.T) {
	anyNvidia := pending("w", 0, 0)
	anyNvidia.Requirements.GPUType = "nvidia"
	over := Reserved([]consensus.WorkItem{placed("x", "a", 0, 6, 0)})["a"]
	if _, ok, why := Eligible(desk("a", 8, 4), over, anyNvidia); ok || why != "not enough free VRAM on one GPU" {
		t.Fatalf("over-committed GPU: ok=%v %q", ok, why)
	}
	full := Reserved([]consensus.WorkItem{placed("x", "a", 0, 4, 0)})["a"]
	if gpu, ok, why := Eligible(desk("a", 8, 4), full, anyNvidia); !ok || gpu != 0 {
		t.Fatalf("GPU with 0 GB left: ok=%v gpu=%d %q", ok, gpu, why)
	}
	// VRAM work fits exactly what the ledger offers, not a byte more.
	if _, ok, _ := Eligible(desk("a", 8, 10), full, pending("w", 6, 0)); !ok {
		t.Fatal("6 GB refused on a GPU offering 6")
	}
	if _, ok, _ := Eligible(desk("a", 8, 10), full, pending("w", 6.5, 0)); ok {
		t.Fatal("6.5 GB placed on a GPU offering 6")
	}
}

// Within one plan every placement holds its VRAM for the next: work placed
// one after another never takes a GPU past the sample.
func TestPlan_HoldsWithinOnePlan(t *testing.T) {
	items := []consensus.WorkItem{pending("w1", 6, 0), pending("w2", 6, 0), pending("w3", 6, 0)}
	for i := range items {
		items[i].SubmittedAt = t0.Add(time.Duration(i) * time.Second)
	}
	out := Plan(t0, []consensus.Record{desk("a", 8, 14)}, items, time.Minute)
	var sum float64
	for _, tr := range out {
		if tr.To == consensus.WorkAssigned {
			sum += 6
		}
	}
	if sum != 12 {
		t.Fatalf("placed %v GB on a GPU with 14 free, want 12 (two items): %+v", sum, out)
	}
}
