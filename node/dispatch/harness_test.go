package dispatch_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/node/dispatch"
	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
	"github.com/chiffon-dev/chiffon/node/worker"
)

// broker is the package's real RabbitMQ, started by the first test that
// calls rabbit: the placement, fuzz and fake-broker tests run without one.
var broker dispatchtest.Shared

// rabbit returns the package's real RabbitMQ, starting it if need be.
func rabbit(t testing.TB) *dispatchtest.Broker {
	t.Helper()
	return broker.Get(t)
}

func TestMain(m *testing.M) {
	os.Exit(dispatchtest.Main(m, &broker))
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// harness is a leader's dispatcher on an in-memory registry with one
// desktop running a real worker.Runner behind real HTTP.
type harness struct {
	t      *testing.T
	store  *dispatchtest.Store
	d      *dispatch.Dispatcher
	calls  string // the handler appends each work_id it runs here
	cancel context.CancelFunc
	done   chan struct{}
}

// newHarness starts it all. The handler script runs after the harness
// records the call; cfgf may change the dispatcher's config.
func newHarness(t *testing.T, handler string, cfgf func(*dispatch.Config)) *harness {
	t.Helper()
	h := &harness{t: t, store: dispatchtest.NewStore(), calls: filepath.Join(t.TempDir(), "calls")}
	_, addr := serveDesktop(t, `echo "$CHIFFON_WORK_ID" >> `+h.calls+`; `+handler, 2)
	h.addDesktop("desk-1", addr, consensus.StatusOnline)

	cfg := dispatch.DefaultConfig()
	cfg.Token = "tok"
	cfg.LongPoll = 2 * time.Second
	cfg.Logger = testlog.New(t, slog.LevelInfo)
	cfgf(&cfg)
	var err error
	if h.d, err = dispatch.New(cfg, h.store); err != nil {
		t.Fatal(err)
	}
	h.start()
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		_ = h.d.Run(ctx)
	}()
	h.t.Cleanup(h.stop)
}

// stop ends Run (as a lost leadership does) and waits for it.
func (h *harness) stop() {
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(20 * time.Second):
		h.t.Error("Run did not return after its context ended")
	}
}

func (h *harness) addDesktop(id, addr string, status consensus.Status) {
	h.t.Helper()
	r := consensus.Record{AgentID: id, Roles: []string{"desktop"}, Status: status, WorkSlots: 2, WorkAddr: addr,
		Metrics: consensus.ResourceMetrics{CPUCoresAvailable: 8, GPUCount: 1, GPUType: "nvidia", GPUVRAMMaxFreeGB: 24,
			GPUs: []consensus.GPU{{Index: 0, VRAMFreeGB: 24, VRAMTotalGB: 24}}}}
	if _, err := h.store.Apply(consensus.UpsertNodes{At: time.Now(), Nodes: []consensus.Record{r}}, time.Second); err != nil {
		h.t.Fatal(err)
	}
}

// runs returns the work_ids the handler ran, in order.
func (h *harness) runs() []string {
	b, _ := os.ReadFile(h.calls)
	return strings.Fields(string(b))
}

// waitWork polls the registry until work_id satisfies ok.
func (h *harness) waitWork(id string, timeout time.Duration, ok func(consensus.WorkItem) bool) consensus.WorkItem {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	fsm := h.store.FSM()
	for {
		index := fsm.Index()
		w, found := fsm.GetWork(id)
		if found && ok(w) {
			return w
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("work %s: condition not met in %s; now %+v (found %v)", id, timeout, w, found)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, _ = fsm.WaitIndex(ctx, index)
		cancel()
	}
}

func published(w consensus.WorkItem) bool { return w.Published }

func request(t testing.TB, id string, req consensus.Requirements, payload string) []byte {
	t.Helper()
	b, err := json.Marshal(apitype.WorkRequest{WorkID: id, Requirements: apitype.Requirements(req), Payload: json.RawMessage(payload)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeResult(t testing.TB, body []byte) apitype.WorkResult {
	t.Helper()
	var r apitype.WorkResult
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("result %q: %v", body, err)
	}
	return r
}

func writeFile(path string) error { return os.WriteFile(path, nil, 0o644) }

// serveDesktop starts a desktop's work runner for handler (with the
// harness's token) behind real HTTP on loopback and returns it and its
// address; both close when the test ends.
func serveDesktop(t *testing.T, handler string, concurrency int) (*worker.Runner, string) {
	t.Helper()
	rc := worker.DefaultConfig()
	rc.Handler = handler
	rc.Concurrency = concurrency
	rc.Token = "tok"
	rc.Logger = testlog.New(t, slog.LevelInfo)
	r, err := worker.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(func() { srv.Close(); _ = r.Close() })
	return r, strings.TrimPrefix(srv.URL, "http://")
}
