package node

import (
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/probe"
)

func TestVRAMConfig_WithHeadroom(t *testing.T) {
	two := probe.Sample{GPUType: probe.GPUTypeNVIDIA, GPUVRAMTotalGB: 48, GPUVRAMAvailableGB: 21.5,
		GPUs: []probe.GPU{{Index: 0, VRAMTotalGB: 24, VRAMFreeGB: 20}, {Index: 1, VRAMTotalGB: 24, VRAMFreeGB: 1.5}}}
	got := VRAMConfig{HeadroomGB: 2}.withHeadroom(two)
	if got.GPUs[0].VRAMFreeGB != 18 || got.GPUs[1].VRAMFreeGB != 0 || got.GPUVRAMAvailableGB != 18 || got.GPUVRAMTotalGB != 48 {
		t.Fatalf("per GPU: %+v", got)
	}
	if two.GPUs[0].VRAMFreeGB != 20 {
		t.Fatal("withHeadroom changed the caller's sample")
	}
	agg := probe.Sample{GPUType: probe.GPUTypeNVIDIA, GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: 10}
	if got := (VRAMConfig{HeadroomGB: 2.5}).withHeadroom(agg); got.GPUVRAMAvailableGB != 7.5 {
		t.Fatalf("aggregate: %+v", got)
	}
	none := probe.Sample{GPUType: probe.GPUTypeNone, CPUCoresPhysical: 4}
	if got := (VRAMConfig{HeadroomGB: 2}).withHeadroom(none); got.GPUVRAMAvailableGB != 0 || len(got.GPUs) != 0 {
		t.Fatalf("no GPU: %+v", got)
	}
}

func TestPushReason(t *testing.T) {
	gpu := func(free, util float64) probe.Sample {
		return probe.Sample{GPUType: probe.GPUTypeNVIDIA, GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: free,
			GPUs: []probe.GPU{{Index: 0, VRAMTotalGB: 24, VRAMFreeGB: free, UtilizationPct: util}}}
	}
	agg := func(free float64) probe.Sample {
		return probe.Sample{GPUType: probe.GPUTypeNVIDIA, GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: free}
	}
	cases := []struct {
		name       string
		last, next probe.Sample
		delta      float64
		want       string // a part of the reason; "" for no push
	}{
		{"small drift waits for the heartbeat", gpu(20, 0), gpu(19.2, 3), 1, ""},
		{"the owner takes VRAM", gpu(20, 0), gpu(10, 0), 1, "free VRAM on GPU 0 moved by -10.00 GB"},
		{"exactly the delta", gpu(20, 0), gpu(21, 0), 1, "moved by 1.00 GB"},
		{"going busy", gpu(20, 2), gpu(20, 85), 1, "GPU 0 went busy"},
		{"going idle", gpu(20, 85), gpu(20, 0), 1, "GPU 0 went idle"},
		{"unknown utilisation is idle", gpu(20, -1), gpu(20, 5), 1, ""},
		{"a GPU appears", agg(0), gpu(20, 0), 1, "the GPUs changed"},
		{"aggregates only", agg(20), agg(18.5), 1, "free VRAM moved by -1.50 GB"},
		{"pushes off", gpu(20, 0), gpu(0, 100), 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := pushReason(tc.last, tc.next, tc.delta)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("reason %q, want %q", got, tc.want)
			}
		})
	}
}

// The bucket lets a burst of three pushes out at once, then one a second.
func TestPushBucket(t *testing.T) {
	var b pushBucket
	now := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	n := 0
	for range 10 {
		if b.take(now) {
			n++
		}
	}
	if n != pushBurst {
		t.Fatalf("%d pushes at once, want %d", n, pushBurst)
	}
	if b.take(now.Add(500 * time.Millisecond)) {
		t.Fatal("a push half a second after the burst")
	}
	if !b.take(now.Add(1100 * time.Millisecond)) {
		t.Fatal("no push a second after the burst")
	}
	// Ten idle seconds refill the burst, no more.
	n = 0
	for range 10 {
		if b.take(now.Add(12 * time.Second)) {
			n++
		}
	}
	if n != pushBurst {
		t.Fatalf("%d pushes after a long pause, want %d", n, pushBurst)
	}
}
