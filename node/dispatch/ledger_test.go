package dispatch

import (
	"fmt"
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

// Placement offers VRAM by the desktop's sample time (Record.SampledAt):
// work that started before the sample is inside the sample's use and is
// not taken off twice; work placed or started since comes off in full; and
// VRAM the owner took shows at once in the sample and wins.
func TestEligible_BySampleTime(t *testing.T) {
	sample := t0.Add(time.Minute)
	running := func(id string, gb float64, started time.Time) consensus.WorkItem {
		w := placed(id, "a", 0, gb, 0)
		w.AssignedAt, w.StartedAt = started.Add(-time.Second), started
		return w
	}
	assigned := func(id string, gb float64, at time.Time) consensus.WorkItem {
		w := placed(id, "a", 0, gb, 0)
		w.Status, w.AssignedAt = consensus.WorkAssigned, at
		return w
	}
	cases := []struct {
		name      string
		free      float64 // the sample's free VRAM on the 24 GB GPU
		sampledAt time.Time
		items     []consensus.WorkItem
		fits, not float64 // the largest request that fits, and one that does not
	}{
		{"work started before the sample is in the sample's use", 14, sample,
			[]consensus.WorkItem{running("r", 8, sample.Add(-10*time.Second))}, 14, 14.5},
		{"work started after the sample comes off the sample", 14, sample,
			[]consensus.WorkItem{running("r", 8, sample.Add(time.Second))}, 6, 6.5},
		{"work assigned before the sample but not started comes off", 22, sample,
			[]consensus.WorkItem{assigned("r", 8, sample.Add(-time.Second))}, 14, 14.5},
		{"no sample time: every hold comes off", 14, time.Time{},
			[]consensus.WorkItem{running("r", 8, sample.Add(-10*time.Second))}, 6, 6.5},
		{"the owner took VRAM beyond Chiffon's hold: the sample wins", 3, sample,
			[]consensus.WorkItem{running("r", 8, sample.Add(-10*time.Second))}, 3, 3.5},
		{"work using less than its hold: the hold stays against the card", 20, sample,
			[]consensus.WorkItem{running("r", 8, sample.Add(-10*time.Second))}, 16, 16.5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := with(desk("a", 8, tc.free), func(r *consensus.Record) { r.SampledAt = tc.sampledAt })
			res := Reserved(tc.items)["a"]
			if _, ok, why := Eligible(n, res, pending("w", tc.fits, 0)); !ok {
				t.Errorf("%v GB refused: %s", tc.fits, why)
			}
			if _, ok, _ := Eligible(n, res, pending("w", tc.not, 0)); ok {
				t.Errorf("%v GB placed", tc.not)
			}
		})
	}
}

// FuzzPlan_VRAMBetweenSamples drives one desktop's GPU through random
// events, one second apart: the owner takes or gives back VRAM, the
// desktop samples (its gossiped free VRAM is what the owner and the
// started work leave, less its headroom), work is submitted, placed by
// Plan, started, or ends. Started work uses all it asked for (the worst
// case). Whenever Plan places work asking for VRAM, everything placed
// (seen by a sample or not) plus what the owner used at the last sample plus the headroom fits
// the card: placement never over-commits a GPU between samples and never
// hands out VRAM the owner was seen using.
func FuzzPlan_VRAMBetweenSamples(f *testing.F) {
	f.Add([]byte{24, 2, 1, 2, 8, 3, 4, 2, 8, 3, 1, 2, 10, 3, 0, 20, 1, 2, 4, 3})
	f.Add([]byte{48, 0, 2, 30, 3, 4, 1, 2, 20, 3, 0, 40, 2, 6, 3, 5, 1, 3})
	f.Add([]byte{16, 4, 2, 4, 2, 4, 2, 4, 3, 4, 4, 1, 2, 4, 3, 4, 1, 2, 4, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		next := func() int {
			if len(b) == 0 {
				return 0
			}
			v := int(b[0])
			b = b[1:]
			return v
		}
		total := float64(next()%80 + 1)
		headroom := float64(next()%5) / 2
		owner, ownerSeen := 0.0, 0.0
		now := t0
		n := desk("a", 64, 0)
		n.WorkSlots = 1000
		n.Metrics.GPUs[0].VRAMTotalGB = total
		var items []consensus.WorkItem
		sample := func() {
			used := owner
			for _, w := range items {
				if w.Status == consensus.WorkRunning {
					used += w.Requirements.MinGPUVRAMGB
				}
			}
			n.Metrics.GPUs[0].VRAMFreeGB = max(0, total-used-headroom)
			n.SampledAt, ownerSeen = now, owner
		}
		sample()
		for step := 0; len(b) > 0 && step < 200; step++ {
			now = now.Add(time.Second)
			switch next() % 6 {
			case 0: // the owner's use changes
				owner = float64(next()) * total / 255
			case 1:
				sample()
			case 2:
				w := pending(fmt.Sprintf("w%03d", step), float64(next()%33)/2, 0)
				w.SubmittedAt, w.Deadline, w.CreateIndex = now, now.Add(time.Hour), uint64(step+1)
				items = append(items, w)
			case 3:
				placedNow := false
				for _, tr := range Plan(now, []consensus.Record{n}, items, time.Minute) {
					for i := range items {
						if items[i].WorkID == tr.WorkID && tr.To == consensus.WorkAssigned {
							items[i].Status, items[i].AgentID, items[i].GPUIndex = consensus.WorkAssigned, tr.AgentID, tr.GPUIndex
							items[i].AssignedAt, items[i].Attempts = now, tr.Attempt
							placedNow = placedNow || items[i].Requirements.MinGPUVRAMGB > 0
						}
					}
				}
				if !placedNow { // work asking for no VRAM may go to a full GPU
					continue
				}
				var held float64
				for _, w := range items {
					if w.Status == consensus.WorkAssigned || w.Status == consensus.WorkRunning {
						held += w.Requirements.MinGPUVRAMGB
					}
				}
				if held > total+1e-9 {
					t.Fatalf("step %d: %v GB placed on a %v GB card", step, held, total)
				}
				if held+ownerSeen+headroom > total+1e-9 {
					t.Fatalf("step %d: %v GB placed + owner's %v GB seen + headroom %v > card %v GB",
						step, held, ownerSeen, headroom, total)
				}
			case 4, 5: // the oldest assigned item starts, or the oldest placed one ends
				start := next()%2 == 0
				for i := range items {
					w := &items[i]
					if start && w.Status == consensus.WorkAssigned {
						w.Status, w.StartedAt = consensus.WorkRunning, now
						break
					}
					if !start && (w.Status == consensus.WorkAssigned || w.Status == consensus.WorkRunning) {
						w.Status = consensus.WorkSucceeded
						break
					}
				}
			}
		}
	})
}
