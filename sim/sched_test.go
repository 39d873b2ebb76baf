package sim

import (
	"fmt"
	"math"
	"runtime/metrics"
)

// schedLatency snapshots the Go scheduler's histogram of how long
// goroutines waited to run once runnable: the measure of how starved the
// in-process nodes (raft's heartbeats among them) were.
type schedLatency struct{ h *metrics.Float64Histogram }

const schedMetric = "/sched/latencies:seconds"

func readSched() schedLatency {
	s := []metrics.Sample{{Name: schedMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return schedLatency{}
	}
	return schedLatency{s[0].Value.Float64Histogram()}
}

// since describes the waits between before and s: p50, p99, p99.9 and
// the largest bucket's lower bound.
func (s schedLatency) since(before schedLatency) string {
	if s.h == nil || before.h == nil {
		return "no scheduler metrics"
	}
	counts := make([]uint64, len(s.h.Counts))
	var total uint64
	for i := range counts {
		counts[i] = s.h.Counts[i] - before.h.Counts[i]
		total += counts[i]
	}
	q := func(p float64) float64 {
		want := uint64(math.Ceil(p * float64(total)))
		var n uint64
		for i, c := range counts {
			if n += c; n >= want && c > 0 {
				return s.h.Buckets[i+1]
			}
		}
		return math.Inf(1)
	}
	top := 0.0
	for i, c := range counts {
		if c > 0 {
			top = s.h.Buckets[i]
		}
	}
	ms := func(v float64) string { return fmt.Sprintf("%.3g ms", v*1000) }
	return fmt.Sprintf("goroutine waits to run: p50 ≤ %s, p99 ≤ %s, p99.9 ≤ %s, max ≥ %s (%d waits)",
		ms(q(0.5)), ms(q(0.99)), ms(q(0.999)), ms(top), total)
}
