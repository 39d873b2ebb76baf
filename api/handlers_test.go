package api

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// leaderFixture is a single-node "cluster": a real FSM with a few agents
// and a fake raft that leads.
func leaderFixture(t *testing.T, edit func(*Config)) (*consensus.FSM, *fakeRaft, *Server, string) {
	t.Helper()
	fsm := consensus.NewFSM()
	applyFSM(t, fsm, 5,
		rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"),
		rec(2, consensus.StatusOnline, 8, 12, 16, "amd"),
		rec(3, consensus.StatusOffline, 40, 16, 64, "nvidia"),
		rec(4, consensus.StatusOnline, 0, 4, 8, "none"),
		rec(5, consensus.StatusSuspect, 30, 8, 32, "nvidia"),
		rec(6, consensus.StatusOnline, 24, 2, 4, "nvidia", "orchestrator"),
		rec(7, consensus.StatusOnline, 20, 10, 32, "nvidia", "desktop", "orchestrator"),
		rec(8, consensus.StatusLeft, 20, 10, 32, "intel"),
	)
	r := newLeaderRaft("leader-1")
	s, hs := newTestServer(t, fsm, r, edit)
	return fsm, r, s, hs.URL
}

func TestAPI_ErrorPaths(t *testing.T) {
	_, _, _, base := leaderFixture(t, func(c *Config) { c.RemovePeer = func(string) error { return nil } })
	unknown := agentID(999)
	cases := []struct {
		name, method, path string
		code               int
		want               []string
	}{
		{"vram not a number", "GET", "/agents/available-capacity?min_gpu_vram_gb=lots", 400, []string{"min_gpu_vram_gb", "number ≥ 0"}},
		{"cores negative", "GET", "/agents/available-capacity?min_cpu_cores=-1", 400, []string{"min_cpu_cores", "≥ 0"}},
		{"memory NaN", "GET", "/agents/available-capacity?min_memory_available_gb=NaN", 400, []string{"min_memory_available_gb"}},
		{"vram infinite", "GET", "/v1/agents/available-capacity?min_gpu_vram_gb=Inf", 400, []string{"min_gpu_vram_gb"}},
		{"vram hex float", "GET", "/agents/available-capacity?min_gpu_vram_gb=0x1p5", 400, []string{"min_gpu_vram_gb", `"0x1p5"`, "such as 8 or 1.5"}},
		{"cores with separator", "GET", "/agents/available-capacity?min_cpu_cores=2_5", 400, []string{"min_cpu_cores", `"2_5"`}},
		{"memory exponent", "GET", "/agents/available-capacity?min_memory_available_gb=1e3", 400, []string{"min_memory_available_gb"}},
		{"vram bare point", "GET", "/agents/available-capacity?min_gpu_vram_gb=8.", 400, []string{"min_gpu_vram_gb"}},
		{"vram plus sign", "GET", "/agents/available-capacity?min_gpu_vram_gb=%2B8", 400, []string{"min_gpu_vram_gb"}},
		{"vram huge", "GET", "/agents/available-capacity?min_gpu_vram_gb=" + strings.Repeat("9", 400), 400, []string{"min_gpu_vram_gb"}},
		{"unknown gpu type", "GET", "/agents/available-capacity?gpu_type=nvida", 400, []string{"nvida", "nvidia, amd, intel, none"}},
		{"bad vram mode", "GET", "/agents/available-capacity?vram=sum", 400, []string{"single", "total"}},
		{"unknown parameter", "GET", "/agents/available-capacity?min_vram=8", 400, []string{`"min_vram"`, "allowed:", "min_gpu_vram_gb"}},
		{"repeated parameter", "GET", "/agents/available-capacity?min_cpu_cores=1&min_cpu_cores=2", 400, []string{"2 times"}},
		{"stale and consistent", "GET", "/agents?stale&consistent", 400, []string{"exclude"}},
		{"stale bad value", "GET", "/agents?stale=maybe", 400, []string{"stale"}},
		{"bad wait", "GET", "/agents?index=1&wait=soon", 400, []string{"wait", "30s"}},
		{"wait without unit", "GET", "/agents?index=1&wait=30", 400, []string{"wait"}},
		{"negative wait", "GET", "/agents?index=1&wait=-1s", 400, []string{"wait"}},
		{"wait without index", "GET", "/agents?wait=1s", 400, []string{"needs index"}},
		{"bad index", "GET", "/agents?index=-3", 400, []string{"index"}},
		{"bad status", "GET", "/agents?status=alive", 400, []string{"online, suspect, offline, left"}},
		{"status on capacity", "GET", "/agents/available-capacity?status=online", 400, []string{"unknown query parameter"}},
		{"malformed id", "GET", "/agents/not-a-uuid", 400, []string{"not-a-uuid", "UUID"}},
		{"malformed id capacity", "GET", "/v1/agents/1234/capacity", 400, []string{"1234", "UUID"}},
		{"non-hex id", "GET", "/agents/zzzzzzzz-0000-4000-8000-000000000001/capacity", 400, []string{"hex"}},
		{"unknown agent", "GET", "/agents/" + unknown, 404, []string{unknown}},
		{"unknown agent capacity", "GET", "/agents/" + unknown + "/capacity", 404, []string{unknown}},
		{"unknown agent upper case", "GET", "/agents/" + strings.ToUpper(unknown) + "/capacity", 404, []string{unknown}},
		{"post agents", "POST", "/agents", 405, []string{"POST", "GET"}},
		{"delete capacity", "DELETE", "/v1/agents/available-capacity", 405, []string{"DELETE"}},
		{"put leader", "PUT", "/v1/status/leader", 405, []string{"PUT"}},
		{"get remove peer", "GET", "/v1/operator/raft/peers/x", 405, []string{"DELETE"}},
		{"unknown path", "GET", "/nope", 404, []string{"/nope"}},
		{"trailing slash", "GET", "/agents/", 404, []string{"/agents/"}},
		{"too deep", "GET", "/v1/agents/" + unknown + "/capacity/more", 404, []string{"more"}},
		{"unclean path", "GET", "/v1/../agents", 404, []string{"no such path"}},
		{"double slash", "GET", "//agents", 404, []string{"no such path"}},
		{"status leader param", "GET", "/v1/status/leader?x=1", 400, []string{`"x"`}},
		{"remove unknown peer", "DELETE", "/v1/operator/raft/peers/nobody", 404, []string{"nobody"}},
		{"remove peer params", "DELETE", "/v1/operator/raft/peers/nobody?force", 400, []string{"force"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, nil, tc.method, base+tc.path, nil)
			if r.code != tc.code {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, r.code, r.body, tc.code)
			}
			msg := errorBody(t, r)
			contains(t, msg, tc.want...)
			if tc.code == 405 && r.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

func TestAPI_RemovePeerWithoutHook(t *testing.T) {
	_, _, _, base := leaderFixture(t, nil)
	r := do(t, nil, "DELETE", base+"/v1/operator/raft/peers/leader-1", nil)
	if r.code != http.StatusNotImplemented {
		t.Fatalf("%d %s, want 501", r.code, r.body)
	}
	errorBody(t, r)
}

func TestAPI_RemovePeer(t *testing.T) {
	var (
		mu      sync.Mutex
		removed []string
	)
	_, fr, _, base := leaderFixture(t, func(c *Config) {
		c.RemovePeer = func(id string) error {
			mu.Lock()
			defer mu.Unlock()
			if id == "stuck" {
				return consensus.ErrNotLeader
			}
			removed = append(removed, id)
			return nil
		}
	})
	fr.mu.Lock()
	fr.servers = append(fr.servers, consensus.Server{ID: "f-2", Address: "raft-f-2", Voter: true},
		consensus.Server{ID: "stuck", Address: "raft-stuck", Voter: true})
	fr.mu.Unlock()
	r := do(t, nil, "DELETE", base+"/v1/operator/raft/peers/f-2", nil)
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	var out apitype.RemovedPeer
	r.decode(t, &out)
	if out.Removed != "f-2" || !slices.Equal(removed, []string{"f-2"}) {
		t.Fatalf("answer %+v, removed %v", out, removed)
	}
	r = do(t, nil, "DELETE", base+"/v1/operator/raft/peers/stuck", nil)
	if r.code != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("not-leader error: %d %s (Retry-After %q)", r.code, r.body, r.header.Get("Retry-After"))
	}
}

func TestAPI_AvailableCapacity_FiltersAndOrder(t *testing.T) {
	_, _, _, base := leaderFixture(t, nil)
	// Online desktops: 1 (20 GB, 8 cores), 2 (8 GB amd, 12 cores),
	// 4 (no GPU, 4 cores), 7 (20 GB, 10 cores, also orchestrator).
	cases := []struct {
		name, query string
		want        []int
	}{
		{"all online desktops", "", []int{7, 1, 2, 4}},
		{"vram on one gpu", "min_gpu_vram_gb=16", []int{7, 1}},
		{"vram exact bound", "min_gpu_vram_gb=20", []int{7, 1}},
		{"vram total", "min_gpu_vram_gb=25&vram=total", []int{7, 1}},
		{"vram total lower", "min_gpu_vram_gb=12&vram=total", []int{7, 1, 2}},
		{"vram single default", "min_gpu_vram_gb=12&vram=single", []int{7, 1}},
		{"cores", "min_cpu_cores=9", []int{7, 2}},
		{"vram and cores", "min_gpu_vram_gb=16&min_cpu_cores=9", []int{7}},
		{"memory", "min_memory_available_gb=20", []int{7, 1}},
		{"gpu type", "gpu_type=amd", []int{2}},
		{"gpu type upper case", "gpu_type=NVIDIA", []int{7, 1}},
		{"gpu type none", "gpu_type=none", []int{4}},
		{"nothing matches", "min_cpu_cores=100", []int{}},
		{"zero bounds", "min_gpu_vram_gb=0&min_cpu_cores=0.0", []int{7, 1, 2, 4}},
		{"with stale", "stale&min_gpu_vram_gb=16", []int{7, 1}},
		{"with consistent", "consistent=true&min_gpu_vram_gb=16", []int{7, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, prefix := range []string{"", "/v1"} {
				r := do(t, nil, "GET", base+prefix+"/agents/available-capacity?"+tc.query, nil)
				if r.code != 200 {
					t.Fatalf("%d %s", r.code, r.body)
				}
				var got []apitype.Capacity
				r.decode(t, &got)
				var ids []string
				for _, c := range got {
					ids = append(ids, c.AgentID)
				}
				want := []string{}
				for _, i := range tc.want {
					want = append(want, agentID(i))
				}
				if !slices.Equal(ids, want) && !(len(ids) == 0 && len(want) == 0) {
					t.Fatalf("%s: got %v, want %v", prefix, ids, want)
				}
				if r.header.Get(apitype.HeaderIndex) != "5" {
					t.Errorf("index header %q, want 5", r.header.Get(apitype.HeaderIndex))
				}
			}
		})
	}
}

func TestAPI_Capacity_OneAgent(t *testing.T) {
	_, _, _, base := leaderFixture(t, nil)
	// Any status: agent 3 is offline.
	r := do(t, nil, "GET", base+"/agents/"+agentID(3)+"/capacity", nil)
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	var raw map[string]any
	r.decode(t, &raw)
	for _, k := range []string{"agent_id", "status", "cpu_cores_available", "cpu_cores_physical", "memory_available_gb",
		"gpu_vram_available_gb", "gpu_vram_total_gb", "gpu_type", "timestamp", "gpus"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("capacity lacks %q: %s", k, r.body)
		}
	}
	if raw["status"] != "offline" || raw["agent_id"] != agentID(3) {
		t.Errorf("status/id: %s", r.body)
	}
	want := baseTime.Add(3 * time.Second).Format(time.RFC3339)
	if raw["timestamp"] != want {
		t.Errorf("timestamp %v, want last_heartbeat_at %s", raw["timestamp"], want)
	}
	var c apitype.Capacity
	r.decode(t, &c)
	if len(c.GPUs) != 2 || c.GPUs[0].VRAMFreeGB != 40 || c.GPUVRAMMaxFreeGB != 40 {
		t.Errorf("gpu detail: %+v", c)
	}
}

func TestAPI_Agents_ListAndRecord(t *testing.T) {
	fsm, _, _, base := leaderFixture(t, nil)
	r := do(t, nil, "GET", base+"/agents", nil)
	var all []apitype.Agent
	r.decode(t, &all)
	if len(all) != 8 {
		t.Fatalf("%d agents, want 8", len(all))
	}
	r = do(t, nil, "GET", base+"/v1/agents?status=online", nil)
	var online []apitype.Agent
	r.decode(t, &online)
	for _, a := range online {
		if a.Status != "online" {
			t.Errorf("status filter let %s (%s) through", a.AgentID, a.Status)
		}
	}
	if len(online) != 5 {
		t.Errorf("%d online, want 5", len(online))
	}
	r = do(t, nil, "GET", base+"/agents?status=left", nil)
	if string(r.body) == "null\n" {
		t.Error("empty list must be [], not null")
	}
	// The whole record: every key of the registry's own JSON, same values
	// (and the keys it leaves out when empty, as zero values).
	r = do(t, nil, "GET", base+"/agents/"+agentID(2), nil)
	got := map[string]any{}
	r.decode(t, &got)
	stored, _ := fsm.Get(agentID(2))
	b, _ := json.Marshal(stored)
	want := map[string]any{"work_slots": 0.0, "work_addr": "", "reachable": true, "unreachable_since": nil,
		"sampled_at": nil, "owner": "", "owner_since": nil, "mac": "", "wake_sent_at": nil, "flap_score": 0.0, "history": []any{},
		"sample_age_s": nil}
	json.Unmarshal(b, &want)
	if !mapsEqualJSON(got, want) {
		t.Errorf("record\n got %v\nwant %v", got, want)
	}
	r = do(t, nil, "GET", base+"/agents?status=suspect", nil)
	var none []apitype.Agent
	r.decode(t, &none)
	if len(none) != 1 {
		t.Errorf("suspect: %s", r.body)
	}
}

func mapsEqualJSON(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// panicRegistry panics on List.
type panicRegistry struct{ *consensus.FSM }

func (panicRegistry) List() []consensus.Record { panic("boom") }

func TestAPI_PanicBecomesJSON500(t *testing.T) {
	_, hs := newTestServer(t, panicRegistry{consensus.NewFSM()}, newLeaderRaft("l"), nil)
	r := do(t, nil, "GET", hs.URL+"/agents", nil)
	if r.code != 500 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	contains(t, errorBody(t, r), "internal error")
	// The server still answers afterwards.
	if r := do(t, nil, "GET", hs.URL+"/healthz", nil); r.code != 200 {
		t.Fatalf("healthz after panic: %d", r.code)
	}
}

func TestAPI_NoLeaderWaitsThen503(t *testing.T) {
	fsm := consensus.NewFSM()
	applyFSM(t, fsm, 3, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"))
	fr := &fakeRaft{id: "f-1", lastContact: time.Now().Add(-3 * time.Second)}
	_, hs := newTestServer(t, fsm, fr, func(c *Config) { c.LeaderWait = 300 * time.Millisecond })
	start := time.Now()
	r := do(t, nil, "GET", hs.URL+"/agents/available-capacity", nil)
	if r.code != 503 {
		t.Fatalf("%d %s, want 503", r.code, r.body)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("answered after %s, want it to wait LeaderWait first", waited)
	}
	if r.header.Get("Retry-After") == "" || r.header.Get(apitype.HeaderKnownLeader) != "false" {
		t.Errorf("headers %v", r.header)
	}
	contains(t, errorBody(t, r), "no raft leader", "stale")

	// ?stale answers from the replica at once, saying no leader is known.
	r = do(t, nil, "GET", hs.URL+"/agents/available-capacity?stale", nil)
	if r.code != 200 {
		t.Fatalf("stale: %d %s", r.code, r.body)
	}
	if r.header.Get(apitype.HeaderKnownLeader) != "false" || r.header.Get(apitype.HeaderIndex) != "3" {
		t.Errorf("stale headers %v", r.header)
	}
	lc, _ := strconv.Atoi(r.header.Get(apitype.HeaderLastContact))
	if lc < 3000 || lc > 60000 {
		t.Errorf("last contact %d ms, want about 3000", lc)
	}
	// A leader that appears during the wait is used.
	fr2 := &fakeRaft{id: "f-2"}
	_, hs2 := newTestServer(t, fsm, fr2, nil)
	go func() {
		// The request below polls for a leader; make this node it.
		time.AfterFunc(100*time.Millisecond, func() {
			fr2.mu.Lock()
			fr2.leader, fr2.leaderID = true, "f-2"
			fr2.mu.Unlock()
		})
	}()
	r = do(t, nil, "GET", hs2.URL+"/agents/available-capacity", nil)
	if r.code != 200 {
		t.Fatalf("after election: %d %s", r.code, r.body)
	}
}

func TestAPI_ConsistentVerifiesLeadership(t *testing.T) {
	_, fr, _, base := leaderFixture(t, func(c *Config) { c.LeaderWait = 200 * time.Millisecond })
	r := do(t, nil, "GET", base+"/agents?consistent", nil)
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	fr.mu.Lock()
	fr.verifyErr = consensus.ErrNotLeader
	fr.mu.Unlock()
	r = do(t, nil, "GET", base+"/agents?consistent", nil)
	if r.code != 503 {
		t.Fatalf("unverified leader answered %d %s", r.code, r.body)
	}
	// A forwarded consistent read that cannot be verified is misdirected.
	r = do(t, nil, "GET", base+"/agents?consistent", map[string]string{apitype.HeaderForwardedBy: "f-9"})
	if r.code != http.StatusMisdirectedRequest {
		t.Fatalf("forwarded: %d %s", r.code, r.body)
	}
	// Default mode does not verify.
	if r := do(t, nil, "GET", base+"/agents", nil); r.code != 200 {
		t.Fatalf("default: %d", r.code)
	}
}

func TestAPI_LeaderAnswersOnlyOnceEstablished(t *testing.T) {
	// The node's leadership owner marks the leader established after its
	// term's Barrier; until then a default read is not answered from the
	// leader's own state (it waits, then 503), while ?stale is.
	var established atomic.Bool
	_, fr, _, base := leaderFixture(t, func(c *Config) {
		c.LeaderEstablished = established.Load
		c.LeaderWait = 200 * time.Millisecond
	})
	if r := do(t, nil, "GET", base+"/agents", nil); r.code != http.StatusServiceUnavailable {
		t.Fatalf("default read before established: %d %s, want 503", r.code, r.body)
	}
	r := do(t, nil, "GET", base+"/readyz", nil)
	var ready apitype.Ready
	r.decode(t, &ready)
	if r.code != http.StatusServiceUnavailable || !strings.Contains(ready.Reason, "not yet applied") {
		t.Fatalf("readyz before established: %d %s", r.code, r.body)
	}
	if r := do(t, nil, "GET", base+"/agents?stale", nil); r.code != http.StatusOK {
		t.Fatalf("stale read before established: %d %s", r.code, r.body)
	}
	established.Store(true)
	if r := do(t, nil, "GET", base+"/agents", nil); r.code != http.StatusOK {
		t.Fatalf("default read once established: %d %s", r.code, r.body)
	}
	if r := do(t, nil, "GET", base+"/readyz", nil); r.code != http.StatusOK {
		t.Fatalf("readyz once established: %d %s", r.code, r.body)
	}
	// A mark left over from an earlier term does not make a node that no
	// longer leads answer as leader.
	fr.mu.Lock()
	fr.leader = false
	fr.mu.Unlock()
	if r := do(t, nil, "GET", base+"/agents", nil); r.code != http.StatusServiceUnavailable {
		t.Fatalf("default read after losing leadership: %d %s, want 503", r.code, r.body)
	}
}

func TestAPI_HealthAndReady(t *testing.T) {
	fsm := consensus.NewFSM()
	fr := &fakeRaft{id: "f-1"}
	_, hs := newTestServer(t, fsm, fr, nil)
	if r := do(t, nil, "GET", hs.URL+"/healthz", nil); r.code != 200 || !strings.Contains(string(r.body), `"ok"`) {
		t.Fatalf("healthz %d %s", r.code, r.body)
	}
	cases := []struct {
		name   string
		set    func()
		code   int
		reason string
	}{
		{"no leader", func() {}, 503, "no raft leader"},
		{"never heard", func() { fr.leaderID = "l" }, 503, "never heard"},
		{"stale contact", func() { fr.lastContact = time.Now().Add(-time.Minute) }, 503, "last heard"},
		{"lagging", func() { fr.lastContact = time.Now(); fr.commit, fr.applied = 1000, 10 }, 503, "990 behind"},
		{"ready follower", func() { fr.applied = 1000 }, 200, ""},
		{"ready leader", func() { fr.leader, fr.leaderID = true, "f-1" }, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fr.mu.Lock()
			tc.set()
			fr.mu.Unlock()
			r := do(t, nil, "GET", hs.URL+"/readyz", nil)
			if r.code != tc.code {
				t.Fatalf("%d %s, want %d", r.code, r.body, tc.code)
			}
			var rd apitype.Ready
			r.decode(t, &rd)
			if rd.Ready != (tc.code == 200) || !strings.Contains(rd.Reason, tc.reason) {
				t.Fatalf("%+v", rd)
			}
		})
	}
}

func TestAPI_StatusLeaderAndPeers(t *testing.T) {
	fsm := consensus.NewFSM()
	fr := &fakeRaft{id: "f-1", leaderID: "l-1", leaderAddr: "10.0.0.1:8300", lastContact: time.Now(),
		servers: []consensus.Server{
			{ID: "f-1", Address: "10.0.0.2:8300", Voter: true},
			{ID: "l-1", Address: "10.0.0.1:8300", Voter: true, Leader: true},
			{ID: "n-1", Address: "10.0.0.3:8300", Voter: false},
		}}
	_, hs := newTestServer(t, fsm, fr, func(c *Config) {
		c.LeaderHTTPAddr = func(id string) (string, error) {
			if id == "l-1" {
				return "10.0.0.1:8480", nil
			}
			return "", errors.New("unknown")
		}
	})
	var l apitype.Leader
	do(t, nil, "GET", hs.URL+"/v1/status/leader", nil).decode(t, &l)
	if l != (apitype.Leader{ID: "l-1", RaftAddr: "10.0.0.1:8300", HTTPAddr: "10.0.0.1:8480"}) {
		t.Errorf("leader %+v", l)
	}
	var peers []string
	do(t, nil, "GET", hs.URL+"/v1/status/peers", nil).decode(t, &peers)
	if !slices.Equal(peers, []string{"10.0.0.2:8300", "10.0.0.1:8300"}) {
		t.Errorf("peers %v (voters only)", peers)
	}
	var op []apitype.Peer
	do(t, nil, "GET", hs.URL+"/v1/operator/raft/peers?stale", nil).decode(t, &op)
	if len(op) != 3 || op[1].State != "leader" || op[0].State != "follower" || op[2].Voter {
		t.Errorf("operator peers %+v", op)
	}
}

func TestAPI_Metrics(t *testing.T) {
	_, _, _, base := leaderFixture(t, nil)
	do(t, nil, "GET", base+"/agents/available-capacity?min_gpu_vram_gb=8", nil)
	do(t, nil, "GET", base+"/agents/available-capacity?min_gpu_vram_gb=x", nil)
	r := do(t, nil, "GET", base+"/metrics", nil)
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	contains(t, string(r.body),
		`chiffon_http_requests_total{code="200",route="available_capacity"} 1`,
		`chiffon_http_requests_total{code="400",route="available_capacity"} 1`,
		`chiffon_http_request_duration_seconds_bucket{code="200",route="available_capacity"`,
		"chiffon_raft_leader 1",
		`chiffon_raft_state{state="Leader"} 1`,
		"chiffon_registry_index 5",
		`chiffon_registry_agents{status="online"} 5`,
		"chiffon_http_capacity_view_rebuilds_total 1",
		"go_goroutines",
	)
}

func TestAPI_ViewRebuiltOncePerIndex(t *testing.T) {
	fsm, _, s, base := leaderFixture(t, nil)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { do(t, nil, "GET", base+"/agents/available-capacity", nil) })
	}
	wg.Wait()
	if n := s.views.builds.Load(); n != 1 {
		t.Fatalf("%d rebuilds for one index, want 1", n)
	}
	old := s.views.cur.Load()
	applyFSM(t, fsm, 6, rec(1, consensus.StatusOnline, 2, 1, 1, "nvidia"))
	r := do(t, nil, "GET", base+"/agents/available-capacity?min_gpu_vram_gb=16", nil)
	var got []apitype.Capacity
	r.decode(t, &got)
	if len(got) != 1 || got[0].AgentID != agentID(7) {
		t.Fatalf("after update: %s", r.body)
	}
	if n := s.views.builds.Load(); n != 2 {
		t.Fatalf("%d rebuilds, want 2", n)
	}
	// Unchanged records keep their marshalled bytes.
	nv := s.views.cur.Load()
	if nv.byID[agentID(2)] != old.byID[agentID(2)] || nv.byID[agentID(1)] == old.byID[agentID(1)] {
		t.Error("rebuild did not reuse unchanged entries (or reused a changed one)")
	}
}

func TestAPI_BlockingQuery(t *testing.T) {
	fsm, _, _, base := leaderFixture(t, func(c *Config) { c.MaxBlockingWait = 2 * time.Second })
	done := make(chan response, 1)
	start := time.Now()
	go func() { done <- do(t, nil, "GET", base+"/agents/available-capacity?index=5&wait=10s", nil) }()
	select {
	case r := <-done:
		t.Fatalf("blocking query returned at once: %d %s", r.code, r.body)
	case <-time.After(150 * time.Millisecond):
	}
	applyFSM(t, fsm, 9, rec(20, consensus.StatusOnline, 80, 32, 128, "nvidia"))
	var r response
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("blocking query did not return after the index moved")
	}
	if r.header.Get(apitype.HeaderIndex) != "9" {
		t.Fatalf("index %q, want 9", r.header.Get(apitype.HeaderIndex))
	}
	var got []apitype.Capacity
	r.decode(t, &got)
	if len(got) == 0 || got[0].AgentID != agentID(20) {
		t.Fatalf("answer lacks the new agent first: %s", r.body)
	}

	// An index already passed answers at once, not after the wait.
	start = time.Now()
	if r := do(t, nil, "GET", base+"/agents?index=3&wait=10s", nil); r.code != 200 || time.Since(start) > 5*time.Second {
		t.Fatalf("passed index: %d after %s", r.code, time.Since(start))
	}
	// No change: the wait ends and the same index comes back.
	start = time.Now()
	r = do(t, nil, "GET", base+"/agents?index=9&wait=200ms", nil)
	if r.code != 200 || r.header.Get(apitype.HeaderIndex) != "9" || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("timed-out wait: %d index %s after %s", r.code, r.header.Get(apitype.HeaderIndex), time.Since(start))
	}
	// A wait above the cap is cut to MaxBlockingWait (2 s here).
	start = time.Now()
	r = do(t, nil, "GET", base+"/agents?stale&index=9&wait=1h", nil)
	if el := time.Since(start); r.code != 200 || el < 2*time.Second || el > 10*time.Second {
		t.Fatalf("capped wait: %d after %s", r.code, el)
	}
}

func TestAPI_StartCloseLifecycle(t *testing.T) {
	fsm := consensus.NewFSM()
	s, err := New(testConfig(t, fsm, newLeaderRaft("l"), noAddrs))
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != "" {
		t.Fatal("address before Start")
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); !errors.Is(err, ErrAlreadyStarted) {
		t.Fatalf("second Start: %v", err)
	}
	if r := do(t, nil, "GET", "http://"+s.Addr()+"/healthz", nil); r.code != 200 {
		t.Fatal(r.code)
	}
	// A blocking query in flight ends when the server closes, with a 503
	// (not an empty 200).
	done := make(chan response, 1)
	go func() { done <- do(t, nil, "GET", "http://"+s.Addr()+"/agents?index=100&wait=5m", nil) }()
	testwait.Until(t, 5*time.Second, "the blocking query to arrive", func() (bool, string) {
		var m dto.Metric
		s.metrics.inFlight.Write(&m)
		return m.GetGauge().GetValue() >= 1, "no request in flight"
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.code != 503 || r.header.Get("Retry-After") == "" {
			t.Fatalf("blocking query cut by Close: %d %s", r.code, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocking query outlived Close")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Start(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
}

func TestAPI_NewValidatesConfig(t *testing.T) {
	fsm := consensus.NewFSM()
	good := testConfig(t, fsm, newLeaderRaft("l"), noAddrs)
	cases := map[string]func(*Config){
		"no registry":  func(c *Config) { c.Registry = nil },
		"no raft":      func(c *Config) { c.Raft = nil },
		"no resolver":  func(c *Config) { c.LeaderHTTPAddr = nil },
		"bad addr":     func(c *Config) { c.Addr = "nope" },
		"zero wait":    func(c *Config) { c.LeaderWait = 0 },
		"zero pool":    func(c *Config) { c.MaxIdleConnsPerHost = 0 },
		"tls no certs": func(c *Config) { c.TLS = newEmptyTLS() },
	}
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		t.Run(name, func(t *testing.T) {
			cfg := good
			cases[name](&cfg)
			if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New: %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestAPI_AvailableCapacity_OwnerActiveLeftOut(t *testing.T) {
	fsm, _, _, base := leaderFixture(t, nil)
	busy := rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia")
	busy.Owner, busy.OwnerSince = consensus.OwnerActive, baseTime
	idle := rec(2, consensus.StatusOnline, 8, 12, 16, "amd")
	idle.Owner = consensus.OwnerIdle
	applyFSM(t, fsm, 6, busy, idle)
	cases := []struct {
		query string
		want  []int
	}{
		{"", []int{7, 2, 4}},
		{"include_owner_active=false", []int{7, 2, 4}},
		{"include_owner_active=true", []int{7, 1, 2, 4}},
		{"include_owner_active=true&min_gpu_vram_gb=16", []int{7, 1}},
		{"min_gpu_vram_gb=16", []int{7}},
	}
	for _, tc := range cases {
		r := do(t, nil, "GET", base+"/v1/agents/available-capacity?"+tc.query, nil)
		if r.code != 200 {
			t.Fatalf("%s: %d %s", tc.query, r.code, r.body)
		}
		var got []apitype.Capacity
		r.decode(t, &got)
		var ids, want []string
		owners := map[string]string{}
		for _, c := range got {
			ids = append(ids, c.AgentID)
			owners[c.AgentID] = c.Owner
		}
		for _, i := range tc.want {
			want = append(want, agentID(i))
		}
		if !slices.Equal(ids, want) {
			t.Fatalf("?%s: got %v, want %v", tc.query, ids, want)
		}
		if o, ok := owners[agentID(1)]; ok && o != "active" {
			t.Errorf("?%s: agent 1 owner %q, want active", tc.query, o)
		}
		if o, ok := owners[agentID(2)]; ok && o != "idle" {
			t.Errorf("?%s: agent 2 owner %q, want idle", tc.query, o)
		}
	}
	r := do(t, nil, "GET", base+"/v1/agents/available-capacity?include_owner_active=yes", nil)
	if r.code != 400 || !strings.Contains(string(r.body), "include_owner_active") {
		t.Fatalf("bad include_owner_active: %d %s", r.code, r.body)
	}
}
