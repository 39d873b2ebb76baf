package node

import (
	"time"

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

// tlsCollector exposes how long the node's certificate and the cluster CA
// have left (chiffon_tls_cert_expiry_seconds), so that an alert fires
// weeks before a node can no longer talk to its peers. It reads the
// material loaded at start: a rotated certificate shows after a restart,
// which is when the node starts using it.
type tlsCollector struct {
	n      *Node
	expiry *prometheus.Desc
	now    func() time.Time
}

func newTLSCollector(n *Node) *tlsCollector {
	return &tlsCollector{
		n: n,
		expiry: prometheus.NewDesc("chiffon_tls_cert_expiry_seconds",
			"Seconds until a certificate this node uses expires (negative once expired): cert=\"node\" is its own (-tls-cert), cert=\"ca\" the cluster CA (-tls-ca).",
			[]string{"cert"}, nil),
		now: time.Now,
	}
}

// Describe implements prometheus.Collector.
func (c *tlsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.expiry }

// Collect implements prometheus.Collector. Nothing without TLS material.
func (c *tlsCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.n.tls
	if b == nil {
		return
	}
	now := c.now()
	ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, b.Cert.Leaf.NotAfter.Sub(now).Seconds(), "node")
	if b.CA != nil {
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, b.CA.NotAfter.Sub(now).Seconds(), "ca")
	}
}
