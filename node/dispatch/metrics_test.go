package dispatch_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node/dispatch"
)

// TestDispatch_MetricsCountOutcomes: chiffon_work_placements_total and
// chiffon_work_results_total count what the leader recorded, by outcome:
// a success, a handler failure and work no desktop can hold.
func TestDispatch_MetricsCountOutcomes(t *testing.T) {
	h, fb := fakeHarness(t, `[ "$CHIFFON_WORK_ID" = bad ] && exit 3; cat`,
		func(c *dispatch.Config) { c.PendingTimeout = 300 * time.Millisecond })
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(h.d.Collector()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"ok", "bad"} {
		fb.Publish("chiffon.work", dispatch.Message{Body: request(t, id, consensus.Requirements{}, `1`), Expiration: "60000"})
	}
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "huge", consensus.Requirements{MinGPUVRAMGB: 80}, `1`)})
	for _, id := range []string{"ok", "bad", "huge"} {
		h.waitWork(id, 20*time.Second, published)
	}
	want := map[string]float64{
		`chiffon_work_results_total{outcome="succeeded"}`:          1,
		`chiffon_work_results_total{outcome="failed"}`:             1,
		`chiffon_work_results_total{outcome="no_capacity"}`:        1,
		`chiffon_work_results_total{outcome="node_lost"}`:          0,
		`chiffon_work_results_total{outcome="attempts_exhausted"}`: 0,
	}
	testwait.Until(t, 10*time.Second, "the counters", func() (bool, string) {
		got := counters(t, reg)
		for k, v := range want {
			if got[k] != v {
				return false, fmt.Sprintf("%s = %v, want %v (all: %v)", k, got[k], v, got)
			}
		}
		// A busy machine may let a lease run out and place work again:
		// at least the two that ran were placed.
		if a := got[`chiffon_work_placements_total{outcome="assigned"}`]; a < 2 {
			return false, fmt.Sprintf("%v placements assigned, want at least 2", a)
		}
		return true, ""
	})
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}

// counters gathers reg into name{label="value"} → value.
func counters(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range m.GetLabel() {
				key += fmt.Sprintf("{%s=%q}", lp.GetName(), lp.GetValue())
			}
			out[key] = m.GetCounter().GetValue()
		}
	}
	return out
}
