package dispatch_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
	"github.com/chiffon-dev/chiffon/internal/tlsutil/tlstest"
	"github.com/chiffon-dev/chiffon/node/dispatch"
	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
	"github.com/chiffon-dev/chiffon/node/worker"
)

// TestBridge_DeliversOverMutualTLS: a leader with a server certificate
// delivers work to a desktop that serves its work endpoint over TLS and
// advertises https://, end to end through the bridge. Work placed on
// another node whose registry record points at that same endpoint (an
// address injected through gossip tags) is never delivered there: the
// endpoint's certificate does not name that node.
func TestBridge_DeliversOverMutualTLS(t *testing.T) {
	ca := tlstest.New(t)
	b := map[string]*tlsutil.Bundle{"orch-1": ca.Bundle(t, tlsutil.RoleServer, "orch-1"), "desk-1": ca.Bundle(t, tlsutil.RoleClient, "desk-1")}
	calls := filepath.Join(t.TempDir(), "calls")
	rc := worker.DefaultConfig()
	rc.Handler = `echo "$CHIFFON_WORK_ID" >> ` + calls + `; cat`
	rc.Concurrency = 2
	rc.TLS = b["desk-1"]
	rc.Logger = testlog.New(t, slog.LevelInfo)
	runner, err := worker.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: runner.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(runner.Listener(ln)) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		_ = runner.Close()
	})
	addr := worker.SchemeHTTPS + ln.Addr().String()

	h := &harness{t: t, store: dispatchtest.NewStore(), calls: calls}
	desk := func(name string) consensus.Record {
		return consensus.Record{AgentID: name, Name: name, Roles: []string{"desktop"}, Status: consensus.StatusOnline,
			WorkSlots: 2, WorkAddr: addr, Metrics: consensus.ResourceMetrics{CPUCoresAvailable: 8}}
	}
	if _, err := h.store.Apply(consensus.UpsertNodes{At: time.Now(), Nodes: []consensus.Record{desk("desk-1"), desk("desk-2")}}, time.Second); err != nil {
		t.Fatal(err)
	}
	fb := dispatchtest.NewFakeBroker()
	cfg := dispatch.DefaultConfig()
	cfg.AMQPURL, cfg.Dial = "amqp://fake/", fb.Dial
	cfg.LongPoll = 2 * time.Second
	cfg.TLS = b["orch-1"]
	cfg.Logger = testlog.New(t, slog.LevelInfo)
	if h.d, err = dispatch.New(cfg, h.store); err != nil {
		t.Fatal(err)
	}
	h.start()

	pinned := func(workID, agentID string) []byte {
		body, err := json.Marshal(apitype.WorkRequest{WorkID: workID, AgentID: agentID, Payload: json.RawMessage(`{"n":1}`)})
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	fb.Publish("chiffon.work", dispatch.Message{Body: pinned("to-impostor", "desk-2")})
	fb.Publish("chiffon.work", dispatch.Message{Body: pinned("to-desk", "desk-1")})
	w := h.waitWork("to-desk", 20*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.Output != `{"n":1}` {
		t.Fatalf("work over TLS: %+v", w)
	}
	testwait.Holds(t, 2*time.Second, "desk-1's endpoint never runs desk-2's work", func() (bool, string) {
		return !slices.Contains(h.runs(), "to-impostor"), fmt.Sprintf("ran %v", h.runs())
	})
	if got, _ := h.store.FSM().GetWork("to-impostor"); got.Status.Terminal() || got.Published {
		t.Fatalf("desk-2's work finished: %+v", got)
	}
}
