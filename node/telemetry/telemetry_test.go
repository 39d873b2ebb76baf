package telemetry

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
	"github.com/chiffon-dev/chiffon/internal/tlsutil/tlstest"
	"github.com/chiffon-dev/chiffon/probe"
)

const agentA = "00000000-0000-4000-8000-00000000000a"

// tagsAt are a desktop's tags with cores available and a sample time.
func tagsAt(t *testing.T, id string, cores float64, at time.Time) map[string]string {
	t.Helper()
	tags, err := gossip.EncodeTags(nil, gossip.NodeInfo{AgentID: id, Roles: []string{gossip.RoleDesktop},
		Sample: probe.Sample{CPUCoresPhysical: 16, CPUCoresAvailable: cores, TakenAt: at, GPUType: probe.GPUTypeNone}})
	if err != nil {
		t.Fatal(err)
	}
	return tags
}

func cores(t *testing.T, tags map[string]string) float64 {
	t.Helper()
	info, err := gossip.DecodeTags(tags)
	if err != nil {
		t.Fatal(err)
	}
	return info.Sample.CPUCoresAvailable
}

func TestOverlay_NewerPushReplacesGossipOlderDoesNot(t *testing.T) {
	t0 := time.Now().Truncate(time.Second)
	o := NewOverlay(10, time.Minute)
	if ok, err := o.Put("desk-a", tagsAt(t, agentA, 3, t0.Add(2*time.Second)), t0); !ok || err != nil {
		t.Fatalf("first push: %v %v", ok, err)
	}
	if ok, _ := o.Put("desk-a", tagsAt(t, agentA, 3, t0.Add(2*time.Second)), t0); ok {
		t.Fatal("the same tags again counted as a change")
	}

	// Gossip still has the older sample: the push wins.
	members := []serf.Member{{Name: "desk-a", Status: serf.StatusAlive, Tags: tagsAt(t, agentA, 9, t0)}}
	gossiped := members[0].Tags
	if n := o.Merge(members, t0); n != 1 || cores(t, members[0].Tags) != 3 {
		t.Fatalf("merge with older gossip: replaced %d, cores %v; want the pushed 3", n, cores(t, members[0].Tags))
	}
	if cores(t, gossiped) != 9 {
		t.Fatal("Merge changed the map gossip handed it")
	}

	// Gossip caught up with a newer sample (the push was lost): gossip wins.
	members = []serf.Member{{Name: "desk-a", Status: serf.StatusAlive, Tags: tagsAt(t, agentA, 5, t0.Add(4*time.Second))}}
	if n := o.Merge(members, t0); n != 0 || cores(t, members[0].Tags) != 5 {
		t.Fatalf("merge with newer gossip: replaced %d, cores %v; want gossip's 5", n, cores(t, members[0].Tags))
	}

	// Another machine under the name (another agent_id): gossip stands.
	members = []serf.Member{{Name: "desk-a", Status: serf.StatusAlive, Tags: tagsAt(t, "00000000-0000-4000-8000-00000000000b", 7, t0)}}
	if n := o.Merge(members, t0); n != 0 || cores(t, members[0].Tags) != 7 {
		t.Fatalf("merge across agent ids: replaced %d", n)
	}
}

func TestOverlay_ForgetsPushesOfNonMembersAndIsBounded(t *testing.T) {
	t0 := time.Now()
	o := NewOverlay(2, time.Minute)
	for _, name := range []string{"desk-a", "desk-b"} {
		if _, err := o.Put(name, tagsAt(t, agentA, 1, t0), t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := o.Put("desk-c", tagsAt(t, agentA, 1, t0), t0); err != ErrFull {
		t.Fatalf("third node in an overlay of two: %v, want ErrFull", err)
	}
	members := []serf.Member{{Name: "desk-a", Tags: tagsAt(t, agentA, 0, t0)}}
	o.Merge(members, t0.Add(30*time.Second))
	if o.Len() != 2 {
		t.Fatalf("a push younger than the ttl was dropped: %d left", o.Len())
	}
	o.Merge(members, t0.Add(2*time.Minute))
	if o.Len() != 1 {
		t.Fatalf("after the ttl the non-member's push should be gone: %d left", o.Len())
	}
	o.Reset()
	if o.Len() != 0 {
		t.Fatal("Reset kept entries")
	}
}

// leader is a handler set up as the established leader (or not).
type leaderState struct {
	leading atomic.Bool
	addr    atomic.Value
	wakes   atomic.Int32
}

func newTestHandler(o *Overlay, auth Auth, st *leaderState) *Handler {
	st.addr.Store("")
	return NewHandler(HandlerConfig{Overlay: o, Auth: auth, Leading: st.leading.Load,
		LeaderAddr: func() string { return st.addr.Load().(string) }, Accepted: func() { st.wakes.Add(1) }})
}

func serve(h http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("PUT "+Path, h)
	return mux
}

func put(t *testing.T, c *http.Client, url string, body []byte) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func report(t *testing.T, tags map[string]string) []byte {
	b, err := json.Marshal(Report{Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandler_LeaderTakesFollowerRedirectsBadInputRefused(t *testing.T) {
	o := NewOverlay(10, time.Minute)
	st := &leaderState{}
	srv := httptest.NewServer(serve(newTestHandler(o, Auth{}, st)))
	defer srv.Close()
	url := srv.URL + "/v1/internal/telemetry/desk-a"
	body := report(t, tagsAt(t, agentA, 4, time.Now()))

	st.addr.Store("10.0.0.9:8480")
	code, hdr, msg := put(t, srv.Client(), url, body)
	if code != http.StatusMisdirectedRequest || hdr.Get(HeaderLeader) != "10.0.0.9:8480" || !strings.Contains(msg, "not the raft leader") {
		t.Fatalf("follower: %d %q %s; want 421 naming the leader", code, hdr.Get(HeaderLeader), msg)
	}
	if o.Len() != 0 {
		t.Fatal("a follower kept a push")
	}

	st.leading.Store(true)
	if code, _, msg := put(t, srv.Client(), url, body); code != http.StatusNoContent {
		t.Fatalf("leader: %d %s", code, msg)
	}
	if o.Len() != 1 || st.wakes.Load() != 1 {
		t.Fatalf("leader took the push: overlay %d, wakes %d", o.Len(), st.wakes.Load())
	}

	for name, bad := range map[string][]byte{
		"not json":      []byte("{"),
		"unknown field": []byte(`{"tags":{},"x":1}`),
		"no agent id":   report(t, map[string]string{"role": "desktop"}),
		"bad number":    report(t, map[string]string{gossip.TagAgentID: agentA, "cpu": "x"}),
		"too large":     []byte(`{"tags":{"a":"` + strings.Repeat("x", maxBody) + `"}}`),
	} {
		code, _, msg := put(t, srv.Client(), url, bad)
		var e struct{ Error string }
		if code != http.StatusBadRequest || json.Unmarshal([]byte(msg), &e) != nil || e.Error == "" {
			t.Errorf("%s: %d %s; want 400 with a JSON error", name, code, msg)
		}
	}
	if o.Len() != 1 {
		t.Fatal("bad input changed the overlay")
	}
}

func TestHandler_EncryptedGossipWithoutCAOrTokenRefuses(t *testing.T) {
	o := NewOverlay(10, time.Minute)
	st := &leaderState{}
	st.leading.Store(true)
	h := newTestHandler(o, Auth{GossipEncrypted: func() bool { return true }}, st)
	srv := httptest.NewServer(serve(h))
	defer srv.Close()
	code, _, msg := put(t, srv.Client(), srv.URL+"/v1/internal/telemetry/desk-a", report(t, tagsAt(t, agentA, 4, time.Now())))
	if code != http.StatusForbidden || !strings.Contains(msg, "-http-token") || o.Len() != 0 {
		t.Fatalf("%d %s (overlay %d); want 403 naming what would authenticate pushes", code, msg, o.Len())
	}
	// With a token the API checks it before the handler: pushes are taken.
	h.cfg.Auth.Token = true
	if code, _, msg := put(t, srv.Client(), srv.URL+"/v1/internal/telemetry/desk-a", report(t, tagsAt(t, agentA, 4, time.Now()))); code != http.StatusNoContent {
		t.Fatalf("with a token: %d %s", code, msg)
	}
}

// A leader with a cluster CA takes a push only from the certificate of
// the node pushed for, over real TLS on loopback.
func TestHandler_ClientCertificateMustNameTheNode(t *testing.T) {
	ca := tlstest.New(t)
	orch := ca.Bundle(t, tlsutil.RoleServer, "orch-1")
	o := NewOverlay(10, time.Minute)
	st := &leaderState{}
	st.leading.Store(true)
	srv := httptest.NewUnstartedServer(serve(newTestHandler(o, Auth{Roots: orch.Roots, Domain: orch.Domain}, st)))
	srv.TLS = orch.ServerConfig()
	srv.TLS.ClientAuth = tls.VerifyClientCertIfGiven // to see the handler's own 401
	srv.StartTLS()
	defer srv.Close()
	client := func(b *tlsutil.Bundle) *http.Client {
		var cfg *tls.Config
		if b != nil {
			cfg = b.ClientConfig("server." + b.Domain)
		} else {
			cfg = ca.Bundle(t, tlsutil.RoleClient, "nobody").ClientConfig("server." + orch.Domain)
			cfg.Certificates = nil
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	deskA := ca.Bundle(t, tlsutil.RoleClient, "desk-a")
	body := report(t, tagsAt(t, agentA, 4, time.Now()))
	url := srv.URL + "/v1/internal/telemetry/desk-a"

	if code, _, msg := put(t, client(nil), url, body); code != http.StatusUnauthorized {
		t.Fatalf("no certificate: %d %s; want 401", code, msg)
	}
	if code, _, msg := put(t, client(ca.Bundle(t, tlsutil.RoleClient, "desk-b")), url, body); code != http.StatusForbidden || !strings.Contains(msg, "desk-a") {
		t.Fatalf("desk-b's certificate pushing for desk-a: %d %s; want 403", code, msg)
	}
	if o.Len() != 0 {
		t.Fatal("a refused push reached the overlay")
	}
	if code, _, msg := put(t, client(deskA), url, body); code != http.StatusNoContent {
		t.Fatalf("desk-a's own certificate: %d %s; want 204", code, msg)
	}
	if o.Len() != 1 {
		t.Fatal("the authenticated push is not in the overlay")
	}
}

// fakeOrch is an orchestrator's API for reporter tests: it leads or
// names the leader, and records what it took.
type fakeOrch struct {
	srv     *httptest.Server
	leading atomic.Bool
	leader  atomic.Value // address named on a 421
	block   chan struct{}

	mu   sync.Mutex
	got  []float64
	hits int
}

func newFakeOrch(t *testing.T) *fakeOrch {
	f := &fakeOrch{}
	f.leader.Store("")
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.hits++
		block := f.block
		f.mu.Unlock()
		if block != nil {
			<-block
		}
		if !f.leading.Load() {
			if l := f.leader.Load().(string); l != "" {
				w.Header().Set(HeaderLeader, l)
			}
			w.WriteHeader(http.StatusMisdirectedRequest)
			return
		}
		var rep Report
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		info, _ := gossip.DecodeTags(rep.Tags)
		f.mu.Lock()
		f.got = append(f.got, info.Sample.CPUCoresAvailable)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeOrch) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeOrch) received() []float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]float64(nil), f.got...)
}

func TestReporter_FindsTheLeaderThroughAFollower(t *testing.T) {
	follower, leader := newFakeOrch(t), newFakeOrch(t)
	leader.leading.Store(true)
	follower.leader.Store(leader.addr())
	var listed atomic.Int32
	r := NewReporter(ReporterConfig{Node: "desk-a", Client: &http.Client{Timeout: 5 * time.Second},
		Targets: func() []Target { listed.Add(1); return []Target{{"orch-1", follower.addr()}} }, MinBackoff: 10 * time.Millisecond})
	defer r.Close()
	r.Offer(tagsAt(t, agentA, 4, time.Now()))
	testwait.Until(t, 10*time.Second, "the leader to receive the push", func() (bool, string) {
		got := leader.received()
		return len(got) == 1 && got[0] == 4, fmt.Sprintf("leader got %v", got)
	})
	// The next push goes straight to the leader it learnt.
	follower.mu.Lock()
	hits := follower.hits
	follower.mu.Unlock()
	r.Offer(tagsAt(t, agentA, 5, time.Now()))
	testwait.Until(t, 10*time.Second, "the second push", func() (bool, string) { return len(leader.received()) == 2, "" })
	follower.mu.Lock()
	defer follower.mu.Unlock()
	if follower.hits != hits {
		t.Fatalf("the second push asked the follower again (%d hits, was %d)", follower.hits, hits)
	}
	if n := listed.Load(); n != 1 {
		t.Fatalf("the orchestrators were listed %d times; want once (the second push goes to the known leader)", n)
	}
}

// While the leader is slow, offers coalesce: the leader ends with the
// newest tags, not a queue of every one.
func TestReporter_CoalescesWhileAPushIsInFlight(t *testing.T) {
	leader := newFakeOrch(t)
	leader.leading.Store(true)
	block := make(chan struct{})
	leader.mu.Lock()
	leader.block = block
	leader.mu.Unlock()
	r := NewReporter(ReporterConfig{Node: "desk-a", Client: &http.Client{Timeout: 5 * time.Second},
		Targets: func() []Target { return []Target{{"orch-1", leader.addr()}} }, MinBackoff: 10 * time.Millisecond})
	defer r.Close()
	r.Offer(tagsAt(t, agentA, 1, time.Now()))
	testwait.Until(t, 10*time.Second, "the first push to arrive", func() (bool, string) {
		leader.mu.Lock()
		defer leader.mu.Unlock()
		return leader.hits == 1, ""
	})
	for c := 2; c <= 50; c++ {
		r.Offer(tagsAt(t, agentA, float64(c), time.Now()))
	}
	leader.mu.Lock()
	leader.block = nil
	leader.mu.Unlock()
	close(block)
	testwait.Until(t, 10*time.Second, "the newest tags to arrive", func() (bool, string) {
		got := leader.received()
		return len(got) > 0 && got[len(got)-1] == 50, ""
	})
	if got := leader.received(); len(got) != 2 {
		t.Fatalf("leader received %v; want the first push and then only the newest (50)", got)
	}
}

// No leader anywhere: the reporter retries with backoff and delivers
// once one appears; Close ends it promptly even mid-wait.
func TestReporter_RetriesUntilALeaderAppears(t *testing.T) {
	orch := newFakeOrch(t)
	logs := &testlog.Buffer{}
	r := NewReporter(ReporterConfig{Node: "desk-a", Client: &http.Client{Timeout: 5 * time.Second},
		Targets: func() []Target { return []Target{{"orch-1", orch.addr()}} }, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	r.Offer(tagsAt(t, agentA, 6, time.Now()))
	testwait.Until(t, 10*time.Second, "a few refused attempts", func() (bool, string) {
		orch.mu.Lock()
		defer orch.mu.Unlock()
		return orch.hits >= 3, ""
	})
	// A cluster with no leader yet is how every cluster starts: no warning.
	if out := logs.String(); strings.Contains(out, "level=WARN") || !strings.Contains(out, "no leader to push telemetry to yet") {
		t.Errorf("while no orchestrator led, the reporter logged:\n%s", out)
	}
	orch.leading.Store(true)
	testwait.Until(t, 10*time.Second, "the push once the orchestrator leads", func() (bool, string) {
		got := orch.received()
		return len(got) == 1 && got[0] == 6, ""
	})
	done := make(chan struct{})
	go func() { r.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
}

// A refused push (403: this cluster will not take it as configured) is
// not retried until RefusedWait, however short the failure backoff; and
// the failure waits are jittered within ±20 %.
func TestReporter_RefusalWaitsLongerThanAFailure(t *testing.T) {
	// Two reporters side by side with the same short backoff: one told
	// 403 (refused), one told 500 (failed), which is the clock: once the
	// failing one has retried forty times, the refused one must still have
	// asked only once.
	reporter := func(code int) (*Reporter, *atomic.Int32) {
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			w.WriteHeader(code)
		}))
		t.Cleanup(srv.Close)
		r := NewReporter(ReporterConfig{Node: "desk-a", Client: &http.Client{Timeout: 5 * time.Second},
			Targets:    func() []Target { return []Target{{"orch-1", strings.TrimPrefix(srv.URL, "http://")}} },
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, RefusedWait: time.Minute})
		t.Cleanup(r.Close)
		r.Offer(tagsAt(t, agentA, 1, time.Now()))
		return r, &hits
	}
	r, refused := reporter(http.StatusForbidden)
	_, failed := reporter(http.StatusInternalServerError)
	testwait.Until(t, 10*time.Second, "the refused push", func() (bool, string) { return refused.Load() >= 1, "" })
	testwait.Until(t, 30*time.Second, "forty retries of the failing reporter", func() (bool, string) {
		return failed.Load() >= 40, fmt.Sprintf("%d requests", failed.Load())
	})
	if n := refused.Load(); n != 1 {
		t.Fatalf("%d requests after a refusal while a failing push was retried %d times; want 1 (a refusal waits RefusedWait)",
			n, failed.Load())
	}
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 1000 {
		d := r.jitter(time.Second)
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < 800*time.Millisecond || hi > 1200*time.Millisecond || hi-lo < 200*time.Millisecond {
		t.Errorf("1,000 jittered waits of 1 s span %s–%s; want within 0.8–1.2 s and spread", lo, hi)
	}
}

// TestRetryMax: a desktop whose push failed (an election, a leader
// out of reach) retries within 5 s, not a heartbeat (30 s) later, and
// never waits past the heartbeat that brings the next sample anyway.
func TestRetryMax(t *testing.T) {
	for _, tc := range []struct{ heartbeat, want time.Duration }{
		{30 * time.Second, 5 * time.Second},
		{2 * time.Second, 2 * time.Second},
		{100 * time.Millisecond, time.Second}, // not under the first wait
	} {
		if got := RetryMax(tc.heartbeat); got != tc.want {
			t.Errorf("heartbeat %s: retries wait up to %s, want %s", tc.heartbeat, got, tc.want)
		}
	}
}
