package api

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/fleet"
)

func TestCapacityOf_SubtractsReservations(t *testing.T) {
	rec := consensus.Record{AgentID: "a", Status: consensus.StatusOnline, Metrics: consensus.ResourceMetrics{
		CPUCoresAvailable: 8, GPUVRAMTotalGB: 48, GPUVRAMAvailableGB: 40, GPUVRAMMaxFreeGB: 22, GPUCount: 2,
		GPUs: []consensus.GPU{{Index: 0, VRAMTotalGB: 24, VRAMFreeGB: 22}, {Index: 1, VRAMTotalGB: 24, VRAMFreeGB: 18}}}}
	cases := []struct {
		name                         string
		res                          *Reservation
		cores, vramFree, maxFree, g0 float64
		items                        int
	}{
		{"none", nil, 8, 40, 22, 22, 0},
		{"one job on gpu0", reservation(2, map[int][]float64{0: {16}}), 6, 24, 18, 6, 1},
		{"over-reserved clamps at zero", reservation(20, map[int][]float64{0: {10, 20}, 1: {30}}), 0, 0, 0, 0, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := capacityOf(&rec, tc.res)
			if c.CPUCoresAvailable != tc.cores || c.GPUVRAMAvailableGB != tc.vramFree || c.GPUVRAMMaxFreeGB != tc.maxFree ||
				c.GPUs[0].VRAMFreeGB != tc.g0 || c.Reserved.Items != tc.items {
				t.Fatalf("got %+v", c)
			}
		})
	}
	// Aggregates only: the reservation comes off the totals.
	agg := rec
	agg.Metrics.GPUs = nil
	c := capacityOf(&agg, reservation(0, map[int][]float64{-1: {10}}))
	if c.GPUVRAMAvailableGB != 30 || c.GPUVRAMMaxFreeGB != 12 || c.Reserved.GPUVRAMGB != 10 {
		t.Fatalf("aggregate: %+v", c)
	}
	// The shared record is not modified.
	if rec.Metrics.GPUs[0].VRAMFreeGB != 22 {
		t.Fatal("capacityOf changed the registry's record")
	}
}

// reservation is what node/dispatch.Reserved gives for work holding cores
// and, by GPU index, holds of these sizes (placed, none started).
func reservation(cores float64, gb map[int][]float64) *Reservation {
	r := &Reservation{CPUCores: cores, GPUVRAMGB: map[int]float64{}, VRAMHolds: map[int][]fleet.VRAMHold{}}
	for gpu, sizes := range gb {
		for i, s := range sizes {
			r.Items++
			r.GPUVRAMGB[gpu] += s
			r.VRAMHolds[gpu] = append(r.VRAMHolds[gpu], fleet.VRAMHold{WorkID: fmt.Sprint(gpu, i), GB: s})
		}
	}
	return r
}

// The capacity answers give what the VRAM ledger offers: the owner's use
// seen in the sample wins over Chiffon's smaller holds, and a hold is
// taken off the sample (these holds' work has not started).
func TestCapacityOf_VRAMLedger(t *testing.T) {
	rec := consensus.Record{AgentID: "a", Status: consensus.StatusOnline, Metrics: consensus.ResourceMetrics{
		GPUVRAMTotalGB: 48, GPUVRAMAvailableGB: 12, GPUVRAMMaxFreeGB: 10, GPUCount: 2,
		GPUs: []consensus.GPU{{Index: 0, VRAMTotalGB: 24, VRAMFreeGB: 2}, {Index: 1, VRAMTotalGB: 24, VRAMFreeGB: 10}}}}
	// GPU 0: the owner uses 22 GB of 24; Chiffon holds 4 there. GPU 1:
	// Chiffon holds 6 placed since the sample.
	c := capacityOf(&rec, reservation(0, map[int][]float64{0: {4}, 1: {6}}))
	if c.GPUs[0].VRAMFreeGB != 0 || c.GPUs[1].VRAMFreeGB != 4 || c.GPUVRAMAvailableGB != 4 || c.GPUVRAMMaxFreeGB != 4 {
		t.Fatalf("got %+v", c)
	}
	if c.Reserved.GPUVRAMGB != 10 || c.Reserved.Items != 2 {
		t.Fatalf("reserved %+v, want 10 GB in 2 items", c.Reserved)
	}
}

// The capacity answers read the desktop's sample time (Record.SampledAt)
// as placement does: work that started before the sample is in its use
// and does not come off the free VRAM again.
func TestCapacityOf_VRAMLedgerBySampleTime(t *testing.T) {
	sample := time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC)
	rec := consensus.Record{AgentID: "a", Status: consensus.StatusOnline, SampledAt: sample,
		Metrics: consensus.ResourceMetrics{GPUVRAMTotalGB: 48, GPUVRAMAvailableGB: 30, GPUVRAMMaxFreeGB: 16, GPUCount: 2,
			GPUs: []consensus.GPU{{Index: 0, VRAMTotalGB: 24, VRAMFreeGB: 14}, {Index: 1, VRAMTotalGB: 24, VRAMFreeGB: 16}}}}
	res := reservation(0, map[int][]float64{0: {8}, 1: {8}})
	// GPU 0's work started before the sample (its 8 GB are in the 10 GB
	// used); GPU 1's was placed since and comes off the sample.
	res.VRAMHolds[0][0].PlacedAt, res.VRAMHolds[0][0].StartedAt = sample.Add(-time.Minute), sample.Add(-50*time.Second)
	res.VRAMHolds[1][0].PlacedAt = sample.Add(time.Second)
	c := capacityOf(&rec, res)
	if c.GPUs[0].VRAMFreeGB != 14 || c.GPUs[1].VRAMFreeGB != 8 || c.GPUVRAMMaxFreeGB != 14 || c.GPUVRAMAvailableGB != 22 {
		t.Fatalf("got %+v", c)
	}
	// Without a sample time every hold comes off, as before.
	rec.SampledAt = time.Time{}
	if c := capacityOf(&rec, res); c.GPUs[0].VRAMFreeGB != 6 {
		t.Fatalf("no sample time: GPU 0 offers %v GB, want 6", c.GPUs[0].VRAMFreeGB)
	}
}

func TestView_ReservationChangesAreNotCached(t *testing.T) {
	rec := consensus.Record{AgentID: "a", Roles: []string{"desktop"}, Status: consensus.StatusOnline, ModifyIndex: 1,
		Metrics: consensus.ResourceMetrics{CPUCoresAvailable: 8}}
	v1 := buildView(staticRegistry{rec}, nil, nil)
	v2 := buildView(staticRegistry{rec}, map[string]Reservation{"a": {Items: 1, CPUCores: 3}}, v1)
	if v2.byID["a"] == v1.byID["a"] || v2.byID["a"].cores != 5 {
		t.Fatalf("reservation ignored: %+v", v2.byID["a"])
	}
	v3 := buildView(staticRegistry{rec}, nil, v2)
	if v3.byID["a"].cores != 8 {
		t.Fatalf("finished work still reserved: %+v", v3.byID["a"])
	}
}

// staticRegistry is a registry frozen at index 1.
type staticRegistry []consensus.Record

func (s staticRegistry) Get(id string) (consensus.Record, bool) {
	for _, r := range s {
		if r.AgentID == id {
			return r, true
		}
	}
	return consensus.Record{}, false
}
func (s staticRegistry) List() []consensus.Record { return append([]consensus.Record(nil), s...) }
func (s staticRegistry) Index() uint64            { return 1 }
func (s staticRegistry) WaitIndex(ctx context.Context, after uint64) (uint64, error) {
	<-ctx.Done()
	return 1, ctx.Err()
}
func (s staticRegistry) Counts() map[consensus.Status]int { return nil }

// Every capacity answer carries sample_age_s as of the answer (to 0.1 s),
// not as of the view: a cached answer ages with the clock; a desktop clock ahead of
// the orchestrator's gives 0, not a negative age; a node that does not
// sample gives null.
func TestView_SampleAge(t *testing.T) {
	sample := time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC)
	desk := func(id string, at time.Time) consensus.Record {
		return consensus.Record{AgentID: id, Roles: []string{"desktop"}, Status: consensus.StatusOnline, ModifyIndex: 1,
			SampledAt: at, Metrics: consensus.ResourceMetrics{CPUCoresAvailable: 8}}
	}
	v := buildView(staticRegistry{desk("a", sample), desk("b", sample.Add(time.Minute)), desk("c", time.Time{})}, nil, nil)
	ages := func(now time.Time) map[string]any {
		var list []struct {
			ID  string   `json:"agent_id"`
			Age *float64 `json:"sample_age_s"`
		}
		b := v.available(capacityFilter{}, now).plain
		if err := json.Unmarshal(b, &list); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		out := map[string]any{}
		for _, e := range list {
			if e.Age == nil {
				out[e.ID] = nil
			} else {
				out[e.ID] = *e.Age
			}
		}
		return out
	}
	if got := ages(sample.Add(2500 * time.Millisecond)); got["a"] != 2.5 || got["b"] != 0.0 || got["c"] != nil {
		t.Fatalf("ages %v, want a 2.5, b 0 (its clock is ahead), c null", got)
	}
	if got := ages(sample.Add(92 * time.Second)); got["a"] != 92.0 || got["b"] != 32.0 {
		t.Fatalf("the cached answer did not age: %v", got)
	}
	// An encoding is reused for less than 0.1 s, then written again.
	if got := ages(sample.Add(92*time.Second + 90*time.Millisecond)); got["a"] != 92.0 {
		t.Fatalf("90 ms later: %v, want the same answer", got)
	}
	if got := ages(sample.Add(92*time.Second + 160*time.Millisecond)); got["a"] != 92.2 {
		t.Fatalf("160 ms later: %v, want a 92.2", got)
	}
	c := capacityAnswer(&consensus.Record{AgentID: "a", SampledAt: sample}, nil, sample.Add(time.Second))
	if c.SampleAgeS == nil || *c.SampleAgeS != 1 {
		t.Fatalf("single agent: sample_age_s %v, want 1", c.SampleAgeS)
	}
}
