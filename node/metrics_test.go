package node

import (
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// TestTLSCollector_SecondsUntilExpiry: /metrics says how long the node's
// certificate and the CA have left, in seconds, and says nothing without
// TLS material.
func TestTLSCollector_SecondsUntilExpiry(t *testing.T) {
	dir := t.TempDir()
	caPEM, caKey, err := tlsutil.GenerateCA(tlsutil.DefaultDomain, 60)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.ParseCA(caPEM, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := tlsutil.WritePair(caFile, caPEM, filepath.Join(dir, "ca-key.pem"), caKey); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Sign(tlsutil.CertRequest{Role: tlsutil.RoleServer, Node: "orch-1", Days: 10})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "c-key.pem")
	if err := tlsutil.WritePair(certFile, certPEM, keyFile, keyPEM); err != nil {
		t.Fatal(err)
	}
	b, err := tlsutil.LoadBundle(caFile, certFile, keyFile, "")
	if err != nil {
		t.Fatal(err)
	}

	n := &Node{}
	c := newTLSCollector(n)
	if got := collect(t, c); len(got) != 0 {
		t.Fatalf("without TLS material: %v; want no series", got)
	}
	n.tls = b
	now := time.Now()
	c.now = func() time.Time { return now }
	got := collect(t, c)
	const day = 24 * 3600.0
	for cert, wantDays := range map[string]float64{"node": 10, "ca": 60} {
		v, ok := got[cert]
		// Certificates start a little in the past (clock skew), so allow
		// a day's slack.
		if !ok || math.Abs(v-wantDays*day) > day {
			t.Errorf("cert=%q: %v seconds (present %v); want about %v days", cert, v, ok, wantDays)
		}
	}
	c.now = func() time.Time { return now.Add(11 * 24 * time.Hour) }
	if v := collect(t, c)["node"]; v >= 0 {
		t.Errorf("after expiry: %v seconds; want negative", v)
	}
}

// collect scrapes one collector into cert label → value.
func collect(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "chiffon_tls_cert_expiry_seconds" || mf.GetType() != dto.MetricType_GAUGE {
			t.Fatalf("unexpected family %s (%s)", mf.GetName(), mf.GetType())
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "cert" {
					out[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}
