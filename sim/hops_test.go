package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node/telemetry"
)

// The push tracer records a push the leader took, by desktop and change
// seq, and not one it refused; the observer's take hands both times over
// once and forgets them.
func TestPushTracer_RecordsTakenPushesOnly(t *testing.T) {
	var refuse atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() {
			w.WriteHeader(http.StatusMisdirectedRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	h := newHopLog()
	client := &http.Client{Transport: pushTracer{next: http.DefaultTransport, log: h}}
	defer client.CloseIdleConnections()
	push := func(node string, seq int) {
		t.Helper()
		tags := map[string]string{gossip.TagCPU: fmt.Sprintf("0.50/0.50/0.%02d/8/7.50", seq)}
		body, _ := json.Marshal(telemetry.Report{Tags: tags})
		url := srv.URL + strings.Replace(telemetry.Path, "{node}", node, 1)
		req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	h.offer("desk-1", map[string]string{gossip.TagCPU: "0.50/0.50/0.07/8/7.50"})
	push("desk-1", 7)
	refuse.Store(true)
	push("desk-1", 8)
	offered, acked := h.take("desk-1", []int{7, 8})
	if offered[0].IsZero() || acked[0].IsZero() || acked[0].Before(offered[0]) {
		t.Errorf("seq 7: offered %v, acked %v; want both, the ack after the offer", offered[0], acked[0])
	}
	if !offered[1].IsZero() || !acked[1].IsZero() {
		t.Errorf("seq 8 (never offered, push refused with 421): offered %v, acked %v; want neither", offered[1], acked[1])
	}
	if offered, acked = h.take("desk-1", []int{7}); !offered[0].IsZero() || !acked[0].IsZero() {
		t.Error("take handed seq 7 over twice")
	}
}

type idleCounter struct {
	http.RoundTripper
	closed atomic.Int32
}

func (c *idleCounter) CloseIdleConnections() { c.closed.Add(1) }

// http.Client.CloseIdleConnections reaches the transport behind the
// tracer (the sim closes its pushes' connections with it at the end).
func TestPushTracer_PassesCloseIdleConnectionsOn(t *testing.T) {
	inner := &idleCounter{RoundTripper: http.DefaultTransport}
	client := &http.Client{Transport: pushTracer{next: inner, log: newHopLog()}}
	client.CloseIdleConnections()
	if inner.closed.Load() != 1 {
		t.Errorf("the traced transport's CloseIdleConnections ran %d times, want 1", inner.closed.Load())
	}
}
