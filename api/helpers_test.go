package api

import (
	"context"
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

	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/consensus/consensustest"
)

// agentID returns a deterministic UUID for test agent i.
func agentID(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i) }

// baseTime is the clock of test records.
var baseTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// rec builds a registry record for agent i.
func rec(i int, status consensus.Status, maxFree, cores, mem float64, gpuType string, roles ...string) consensus.Record {
	if len(roles) == 0 {
		roles = []string{"desktop"}
	}
	m := consensus.ResourceMetrics{
		CPULoad1Min: 1, CPUCoresPhysical: 16, CPUCoresAvailable: cores, MemoryPercent: 40,
		MemoryAvailableGB: mem, GPUType: gpuType,
	}
	if gpuType != "none" && gpuType != "" {
		m.GPUCount = 2
		m.GPUs = []consensus.GPU{
			{Index: 0, Name: "GPU A", VRAMTotalGB: 24, VRAMFreeGB: maxFree, UtilizationPct: 10},
			{Index: 1, Name: "GPU B", VRAMTotalGB: 24, VRAMFreeGB: maxFree / 2, UtilizationPct: 50},
		}
		m.GPUVRAMTotalGB, m.GPUVRAMAvailableGB, m.GPUVRAMMaxFreeGB = 48, maxFree*1.5, maxFree
	}
	return consensus.Record{
		AgentID: agentID(i), Name: fmt.Sprintf("desk-%d", i), Roles: roles,
		GossipAddr: fmt.Sprintf("10.0.0.%d:7946", i%250), Status: status, Metrics: m,
		LastHeartbeatAt: baseTime.Add(time.Duration(i) * time.Second),
	}
}

// applyFSM applies an upsert straight to an FSM, as raft would at index.
func applyFSM(t testing.TB, f *consensus.FSM, index uint64, recs ...consensus.Record) {
	t.Helper()
	b, err := consensus.EncodeCommand(consensus.UpsertNodes{At: baseTime, Nodes: recs})
	if err != nil {
		t.Fatal(err)
	}
	f.Apply(&raft.Log{Type: raft.LogCommand, Index: index, Data: b})
}

// fakeRaft is a Raft whose leadership the test sets.
type fakeRaft struct {
	id string
	mu sync.Mutex
	// The fields below are guarded by mu.
	leader          bool
	leaderID        string
	leaderAddr      string
	verifyErr       error
	servers         []consensus.Server
	lastContact     time.Time
	commit, applied uint64
	// commitReg, when set, is the registry WaitCommitApplied waits on
	// until its index reaches commit (as consensus.Store waits for its
	// FSM); nil: the registry has applied everything.
	commitReg Registry
}

var _ Raft = (*fakeRaft)(nil)

func newLeaderRaft(id string) *fakeRaft {
	return &fakeRaft{id: id, leader: true, leaderID: id, leaderAddr: "raft-" + id,
		servers: []consensus.Server{{ID: id, Address: "raft-" + id, Voter: true, Leader: true}}}
}

func (f *fakeRaft) IsLeader() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.leader }
func (f *fakeRaft) Leader() (string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leaderID, f.leaderAddr
}
func (f *fakeRaft) VerifyLeader() error    { f.mu.Lock(); defer f.mu.Unlock(); return f.verifyErr }
func (f *fakeRaft) LastContact() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.lastContact }
func (f *fakeRaft) Servers() ([]consensus.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]consensus.Server(nil), f.servers...), nil
}
func (f *fakeRaft) ID() string { return f.id }

var _ CommitWaiter = (*fakeRaft)(nil)

func (f *fakeRaft) WaitCommitApplied(ctx context.Context) (uint64, error) {
	f.mu.Lock()
	commit, reg := f.commit, f.commitReg
	f.mu.Unlock()
	if reg == nil {
		return commit, nil
	}
	for cur := reg.Index(); cur < commit; cur = reg.Index() {
		if _, err := reg.WaitIndex(ctx, cur); err != nil {
			return 0, err
		}
	}
	return commit, nil
}
func (f *fakeRaft) Stats() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	state := "Follower"
	if f.leader {
		state = "Leader"
	}
	return map[string]string{"state": state, "commit_index": fmt.Sprint(f.commit), "applied_index": fmt.Sprint(f.applied), "term": "2"}
}

// testConfig is a Config with short waits for tests.
func testConfig(t testing.TB, reg Registry, r Raft, addrs func(string) (string, error)) Config {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Registry, cfg.Raft, cfg.LeaderHTTPAddr = reg, r, addrs
	// A fake raft has no log to catch up on: its leader is established.
	// makeAPICluster replaces this with a real owner per store.
	cfg.LeaderEstablished = func() bool { return true }
	cfg.LeaderWait = 3 * time.Second
	cfg.ForwardTimeout = 2 * time.Second
	cfg.Logger = consensustest.TestLogger(t, slog.LevelInfo)
	return cfg
}

func noAddrs(id string) (string, error) { return "", fmt.Errorf("no address for %s", id) }

// newTestServer makes a Server (not started) with edit applied to its
// Config, and returns it with an httptest server around its handler.
func newTestServer(t testing.TB, reg Registry, r Raft, edit func(*Config)) (*Server, *httptest.Server) {
	t.Helper()
	cfg := testConfig(t, reg, r, noAddrs)
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() { hs.Close(); s.Close() })
	return s, hs
}

// startServer starts a Server on 127.0.0.1:0 and closes it at cleanup.
func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// response is a decoded HTTP answer.
type response struct {
	code   int
	header http.Header
	body   []byte
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// do makes one request and reads the whole answer.
func do(t testing.TB, c *http.Client, method, url string, hdr map[string]string) response {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// apiCluster is a consensustest cluster with an api Server per node.
type apiCluster struct {
	t   testing.TB
	c   *consensustest.Cluster
	mu  sync.Mutex
	srv map[int]*Server // guarded by mu
	// addrs maps raft ID to HTTP address; guarded by mu.
	addrs map[string]string
	// index counts applied test commands (only for log messages).
	applies atomic.Int64
}

// makeAPICluster starts n raft nodes and an api server on each.
func makeAPICluster(t testing.TB, n int, edit func(i int, cfg *Config)) *apiCluster {
	t.Helper()
	var owners sync.WaitGroup
	t.Cleanup(owners.Wait) // after the cluster's own cleanup closed the stores
	ac := &apiCluster{t: t, c: consensustest.MakeCluster(t, n, consensustest.Options{
		Logger: consensustest.TestLogger(t, slog.LevelWarn),
	}), srv: map[int]*Server{}, addrs: map[string]string{}}
	for i := range n {
		store := ac.c.Store(i)
		cfg := testConfig(t, store.FSM(), store, ac.resolve)
		cfg.LeaderEstablished = followLeadership(store, &owners)
		cfg.RemovePeer = store.RemoveServer
		if edit != nil {
			edit(i, &cfg)
		}
		s := startServer(t, cfg)
		ac.mu.Lock()
		ac.srv[i] = s
		ac.addrs[ac.c.ID(i)] = s.Addr()
		ac.mu.Unlock()
	}
	return ac
}

// followLeadership stands in for the node's leadership owner (package
// node, which imports api): it follows store's LeaderCh until the store
// closes and reports the node established once the term's Barrier ran.
func followLeadership(store *consensus.Store, wg *sync.WaitGroup) func() bool {
	var established atomic.Bool
	wg.Go(func() {
		for leading := range store.LeaderCh() {
			established.Store(false)
			for leading && store.IsLeader() {
				if store.Barrier(time.Second) == nil {
					established.Store(true)
					break
				}
			}
		}
	})
	return established.Load
}

func (ac *apiCluster) resolve(id string) (string, error) {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	a, ok := ac.addrs[id]
	if !ok {
		return "", fmt.Errorf("unknown node %s", id)
	}
	return a, nil
}

// url returns node i's base URL.
func (ac *apiCluster) url(i int) string {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	return "http://" + ac.srv[i].Addr()
}

// upsert writes records through the leader and waits until every live node
// has applied them; it returns the index.
func (ac *apiCluster) upsert(recs ...consensus.Record) uint64 {
	ac.t.Helper()
	leader := ac.c.WaitForLeader(ac.t, 10*time.Second)
	idx, err := ac.c.Store(leader).Apply(consensus.UpsertNodes{At: time.Now(), Nodes: recs}, 5*time.Second)
	if err != nil {
		ac.t.Fatal(err)
	}
	ac.c.WaitForIndex(ac.t, idx, 10*time.Second)
	ac.applies.Add(1)
	return idx
}

// kill crashes node i: raft first, then its API server.
func (ac *apiCluster) kill(i int) {
	ac.c.Kill(i)
	ac.mu.Lock()
	s := ac.srv[i]
	ac.mu.Unlock()
	s.Close()
}

// errorBody checks an error answer's shape and returns its message.
func errorBody(t testing.TB, r response) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json (body %s)", ct, r.body)
	}
	var e apitype.Error
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
		t.Errorf("error body %q is not {\"error\": ...}", r.body)
	}
	if r.header.Get(apitype.HeaderIndex) == "" {
		t.Errorf("no %s header", apitype.HeaderIndex)
	}
	return e.Error
}

// contains fails unless s contains every want.
func contains(t testing.TB, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%q does not contain %q", s, w)
		}
	}
}

// decodeJSON reads and closes resp's body into v.
func decodeJSON(resp *http.Response, v any) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
