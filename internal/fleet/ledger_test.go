package fleet

import (
	"math"
	"testing"
	"time"
)

func TestGPULedger_Offered(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	sample := t0.Add(time.Minute)
	before, after := sample.Add(-time.Second), sample.Add(time.Second)
	running := func(gb float64, placed, started time.Time) VRAMHold {
		return VRAMHold{WorkID: "w", GB: gb, PlacedAt: placed, StartedAt: started}
	}
	cases := []struct {
		name     string
		l        GPULedger
		offered  float64
		balance  float64
		checkBal bool
	}{
		{name: "idle GPU offers what the sample saw free",
			l: GPULedger{TotalGB: 24, FreeGB: 22, SampledAt: sample}, offered: 22},
		{name: "headroom is kept for the owner",
			l: GPULedger{TotalGB: 24, FreeGB: 22, SampledAt: sample, HeadroomGB: 2}, offered: 20},
		{name: "placed after the sample: taken off the sample in full",
			l:       GPULedger{TotalGB: 24, FreeGB: 22, SampledAt: sample, Holds: []VRAMHold{{GB: 8, PlacedAt: after}}},
			offered: 14},
		{name: "placed before the sample but not started: not in the sample yet",
			l:       GPULedger{TotalGB: 24, FreeGB: 22, SampledAt: sample, Holds: []VRAMHold{{GB: 8, PlacedAt: before}}},
			offered: 14},
		{name: "started after the sample: not in the sample yet",
			l:       GPULedger{TotalGB: 24, FreeGB: 22, SampledAt: sample, Holds: []VRAMHold{running(8, before, after)}},
			offered: 14},
		{name: "started at the sample's instant: not counted as seen",
			l:       GPULedger{TotalGB: 24, FreeGB: 22, SampledAt: sample, Holds: []VRAMHold{running(8, before, sample)}},
			offered: 14},
		{name: "started before the sample and using what it asked: not subtracted twice",
			l:       GPULedger{TotalGB: 24, FreeGB: 14, SampledAt: sample, Holds: []VRAMHold{running(8, t0, before)}},
			offered: 14},
		{name: "started work using less than it asked: its hold stays against the total",
			l:       GPULedger{TotalGB: 24, FreeGB: 20, SampledAt: sample, Holds: []VRAMHold{running(8, t0, before)}},
			offered: 16},
		{name: "owner took VRAM beyond Chiffon's holds: the sample wins at once",
			l:       GPULedger{TotalGB: 24, FreeGB: 4, SampledAt: sample, Holds: []VRAMHold{running(8, t0, before)}},
			offered: 4},
		{name: "owner's use and a hold placed since the sample both come off",
			l: GPULedger{TotalGB: 24, FreeGB: 10, SampledAt: sample,
				Holds: []VRAMHold{running(8, t0, before), {GB: 6, PlacedAt: after}}},
			offered: 4},
		{name: "unknown sample time: every hold comes off the sample (the rule before the ledger)",
			l: GPULedger{TotalGB: 24, FreeGB: 14, Holds: []VRAMHold{running(8, t0, before)}}, offered: 6},
		{name: "unknown total: only the sample's term",
			l: GPULedger{FreeGB: 10, SampledAt: sample, Holds: []VRAMHold{{GB: 4, PlacedAt: after}}}, offered: 6},
		{name: "over-committed: offers 0, balance says by how much",
			l:       GPULedger{TotalGB: 24, FreeGB: 10, SampledAt: sample, Holds: []VRAMHold{{GB: 12, PlacedAt: after}}},
			offered: 0, balance: -2, checkBal: true},
		{name: "garbled figures count as 0",
			l: GPULedger{TotalGB: math.Inf(1), FreeGB: math.NaN(), SampledAt: sample,
				Holds: []VRAMHold{{GB: -5, PlacedAt: after}}}, offered: 0},
		{name: "a sample above the total is capped by the total less every hold",
			l:       GPULedger{TotalGB: 24, FreeGB: 30, SampledAt: sample, Holds: []VRAMHold{running(4, t0, before)}},
			offered: 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.l.OfferedGB(); got != tc.offered {
				t.Errorf("offered %v GB, want %v", got, tc.offered)
			}
			if tc.checkBal && tc.l.Balance() != tc.balance {
				t.Errorf("balance %v GB, want %v", tc.l.Balance(), tc.balance)
			}
		})
	}
}

// FuzzLedger checks the ledger's promises on arbitrary figures: it never
// offers less than nothing, never VRAM the sample did not see free (less
// the headroom), never more than the card less the holds the sample does
// not show, and work placed within the offer, one piece after another
// between two samples, never takes the GPU past what the last sample and
// the card allow.
func FuzzLedger(f *testing.F) {
	f.Add(24.0, 22.0, 0.0, int64(60), 8.0, int64(10), int64(20), 6.0, int64(70), int64(0), 0.5)
	f.Add(24.0, 4.0, 2.0, int64(60), 8.0, int64(10), int64(20), 30.0, int64(90), int64(95), 0.9)
	f.Add(0.0, 10.0, 1.0, int64(0), 3.0, int64(0), int64(0), 1.0, int64(5), int64(5), 1.0)
	f.Fuzz(func(t *testing.T, total, free, headroom float64, sampleS int64,
		gbA float64, placedAS, startedAS int64, gbB float64, placedBS, startedBS int64, share float64) {
		for _, v := range []float64{total, free, headroom, gbA, gbB, share} {
			if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > 1e6 {
				t.Skip()
			}
		}
		at := func(s int64) time.Time {
			if s <= 0 {
				return time.Time{}
			}
			return time.Unix(s%1e9, 0)
		}
		l := GPULedger{TotalGB: total, FreeGB: free, HeadroomGB: headroom, SampledAt: at(sampleS),
			Holds: []VRAMHold{
				{WorkID: "a", GB: gbA, PlacedAt: at(placedAS), StartedAt: at(startedAS)},
				{WorkID: "b", GB: gbB, PlacedAt: at(placedBS), StartedAt: at(startedBS)},
			}}
		const eps = 1e-6
		// unseen is the rule's own count, kept apart from the ledger's.
		unseen := func(l GPULedger) float64 {
			var s float64
			for _, h := range l.Holds {
				if l.SampledAt.IsZero() || h.StartedAt.IsZero() || !h.PlacedAt.Before(l.SampledAt) ||
					!h.StartedAt.Before(l.SampledAt) {
					s += max(h.GB, 0)
				}
			}
			return s
		}
		check := func(l GPULedger, when string) {
			o := l.OfferedGB()
			if o < 0 {
				t.Fatalf("%s: offered %v < 0", when, o)
			}
			if o > finite(l.FreeGB)-finite(l.HeadroomGB)+eps && o > 0 {
				t.Fatalf("%s: offered %v > free %v - headroom %v", when, o, l.FreeGB, l.HeadroomGB)
			}
			if finite(l.TotalGB) > 0 && o > finite(l.TotalGB)-unseen(l)+eps && o > 0 {
				t.Fatalf("%s: offered %v > total %v - unseen %v", when, o, l.TotalGB, unseen(l))
			}
		}
		check(l, "before placing")
		// The last sample allowed at most this much unseen work, and the
		// card at most this much work in all (when not over-committed
		// already; then nothing may be placed).
		allowSample := finite(free) - finite(headroom)
		allowTotal := finite(total)
		share = math.Abs(share)
		if share > 1 {
			share = 1 / share
		}
		placedAt := l.SampledAt.Add(time.Second) // after the sample: unseen
		for i := range 5 {
			o := l.OfferedGB()
			if o == 0 {
				break
			}
			size := o * share
			if i == 4 {
				size = o // the last one takes all that is left
			}
			l.Holds = append(l.Holds, VRAMHold{WorkID: "new", GB: size, PlacedAt: placedAt})
			check(l, "after placing")
			if unseen(l) > allowSample+eps {
				t.Fatalf("placed past the sample: unseen %v GB > free %v - headroom %v", unseen(l), free, headroom)
			}
			if allowTotal > 0 && l.ReservedGB() > allowTotal+eps {
				t.Fatalf("placed past the card: reserved %v GB > total %v", l.ReservedGB(), total)
			}
		}
	})
}
