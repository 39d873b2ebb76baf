package dispatch

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chiffon-dev/chiffon/consensus"
)

// Placement and result outcomes, the values of the outcome label of
// chiffon_work_placements_total and chiffon_work_results_total.
const (
	OutcomeAssigned          = "assigned"           // placed on a desktop
	OutcomeRequeued          = "requeued"           // back to pending: node lost, unreachable, or lease run out
	OutcomeSucceeded         = "succeeded"          // the handler exited 0
	OutcomeFailed            = "failed"             // the handler failed
	OutcomeNoCapacity        = "no_capacity"        // no node fitted before the deadline
	OutcomeNodeLost          = "node_lost"          // the last allowed attempt's node was lost
	OutcomeAttemptsExhausted = "attempts_exhausted" // requeued after its last attempt
)

// metrics counts what this dispatcher wrote to the registry. Only the
// leader dispatches, so the counters grow on the leader of the moment and
// restart at 0 with the process: sum the rate over every orchestrator.
type metrics struct {
	placements *prometheus.CounterVec
	results    *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chiffon_work_placements_total",
			Help: "Work placements this node recorded as leader, by outcome: assigned (placed on a desktop), requeued (back to pending after a lost or unreachable node or a lease that ran out).",
		}, []string{"outcome"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chiffon_work_results_total",
			Help: "Work results this node recorded as leader, by outcome: succeeded, failed (the handler), no_capacity, node_lost, attempts_exhausted.",
		}, []string{"outcome"}),
	}
	// Every outcome is exported from the start, so rate() has a series to
	// read before the first event.
	for _, o := range []string{OutcomeAssigned, OutcomeRequeued} {
		m.placements.WithLabelValues(o)
	}
	for _, o := range []string{OutcomeSucceeded, OutcomeFailed, OutcomeNoCapacity, OutcomeNodeLost, OutcomeAttemptsExhausted} {
		m.results.WithLabelValues(o)
	}
	return m
}

// recorded counts one transition the registry took.
func (m *metrics) recorded(t consensus.WorkTransition) {
	switch t.To {
	case consensus.WorkAssigned:
		m.placements.WithLabelValues(OutcomeAssigned).Inc()
	case consensus.WorkPending:
		m.placements.WithLabelValues(OutcomeRequeued).Inc()
	case consensus.WorkSucceeded:
		m.results.WithLabelValues(OutcomeSucceeded).Inc()
	case consensus.WorkFailed:
		m.results.WithLabelValues(failureOutcome(t.Error)).Inc()
	}
}

// failureOutcome tells the leader's own failures (their Error starts with
// a Reason) from the handler's.
func failureOutcome(reason string) string {
	switch {
	case strings.HasPrefix(reason, ReasonNoCapacity):
		return OutcomeNoCapacity
	case strings.HasPrefix(reason, ReasonNodeLost):
		return OutcomeNodeLost
	case strings.HasPrefix(reason, ReasonAttempts):
		return OutcomeAttemptsExhausted
	}
	return OutcomeFailed
}

// Collector returns the dispatcher's counters for a Prometheus registry
// (the node registers it on the API's /metrics).
func (d *Dispatcher) Collector() prometheus.Collector {
	return collectors{d.metrics.placements, d.metrics.results}
}

// collectors is several collectors as one.
type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}
