package fleet

import "testing"

func TestSumVRAM(t *testing.T) {
	gpus := [][2]float64{{24, 20}, {24, 6}, {12, 12}}
	at := func(i int) (float64, float64) { return gpus[i][0], gpus[i][1] }
	if got, want := SumVRAM(3, at, 0, 0), (VRAM{Count: 3, TotalGB: 60, FreeGB: 38, MaxFreeGB: 20}); got != want {
		t.Errorf("three GPUs: %+v, want %+v", got, want)
	}
	// Totals alone describe one card; nothing describes none.
	if got, want := SumVRAM(0, nil, 16, 10), (VRAM{Count: 1, TotalGB: 16, FreeGB: 10, MaxFreeGB: 10}); got != want {
		t.Errorf("totals only: %+v, want %+v", got, want)
	}
	if got := SumVRAM(0, nil, 0, 0); got != (VRAM{}) {
		t.Errorf("no GPU: %+v", got)
	}
}
