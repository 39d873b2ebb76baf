package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// gossipCollector exposes the gossip pool on the API's /metrics, read at
// scrape time (nothing is kept up to date between scrapes).
type gossipCollector struct {
	n       *Node
	members *prometheus.Desc
	health  *prometheus.Desc
	lag     *prometheus.Desc
}

func newGossipCollector(n *Node) *gossipCollector {
	return &gossipCollector{
		n: n,
		members: prometheus.NewDesc("chiffon_gossip_members", "Gossip pool members as this node sees them, by serf status.",
			[]string{"status"}, nil),
		health: prometheus.NewDesc("chiffon_gossip_health_score",
			"memberlist's awareness (Lifeguard) score: 0 is healthy, higher means this node is slow to answer probes.", nil, nil),
		lag: prometheus.NewDesc("chiffon_gossip_failure_lag_seconds",
			"How long after a node falls silent serf reports it failed (probe interval + suspicion timeout).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *gossipCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.members
	ch <- c.health
	ch <- c.lag
}

// Collect implements prometheus.Collector.
func (c *gossipCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.n.gossip
	if g == nil {
		return
	}
	counts := map[string]float64{"alive": 0, "leaving": 0, "left": 0, "failed": 0}
	for _, m := range g.Serf().Members() {
		counts[m.Status.String()]++
	}
	for status, v := range counts {
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, v, status)
	}
	ch <- prometheus.MustNewConstMetric(c.health, prometheus.GaugeValue, float64(g.Serf().Memberlist().GetHealthScore()))
	ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, g.FailureLag().Seconds())
}
