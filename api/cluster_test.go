package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// loadAgents writes n agents through the leader: every tenth has 24 GB
// free on one GPU, the rest 4 GB.
func loadAgents(ac *apiCluster, n int) uint64 {
	recs := make([]consensus.Record, n)
	for i := range n {
		vram := 4.0
		if i%10 == 0 {
			vram = 24
		}
		recs[i] = rec(i, consensus.StatusOnline, vram, float64(i%16), 32, "nvidia")
	}
	return ac.upsert(recs...)
}

func TestAPI_FollowerForwardsToLeader(t *testing.T) {
	ac := makeAPICluster(t, 3, nil)
	leader := ac.c.WaitForLeader(t, 10*time.Second)
	idx := loadAgents(ac, 50)
	f := ac.c.Followers(leader)[0]

	r := do(t, nil, "GET", ac.url(f)+"/agents/available-capacity?min_gpu_vram_gb=16", nil)
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	if by := r.header.Get(apitype.HeaderServedBy); by != ac.c.ID(leader) {
		t.Errorf("served by %q, want the leader %s", by, ac.c.ID(leader))
	}
	if got := r.header.Get(apitype.HeaderIndex); got != strconv.FormatUint(idx, 10) {
		t.Errorf("index %s, want %d", got, idx)
	}
	var caps []apitype.Capacity
	r.decode(t, &caps)
	if len(caps) != 5 {
		t.Errorf("%d matches, want 5", len(caps))
	}
	// ?stale is answered by the follower itself.
	r = do(t, nil, "GET", ac.url(f)+"/agents/available-capacity?stale&min_gpu_vram_gb=16", nil)
	if by := r.header.Get(apitype.HeaderServedBy); by != ac.c.ID(f) || r.header.Get(apitype.HeaderKnownLeader) != "true" {
		t.Errorf("stale served by %q known-leader %q", by, r.header.Get(apitype.HeaderKnownLeader))
	}
	if lc, err := strconv.Atoi(r.header.Get(apitype.HeaderLastContact)); err != nil || lc < 0 || lc > 5000 {
		t.Errorf("last contact %q", r.header.Get(apitype.HeaderLastContact))
	}
	// ?consistent from a follower: the leader verifies, then answers.
	r = do(t, nil, "GET", ac.url(f)+"/agents/"+agentID(10)+"/capacity?consistent", nil)
	if r.code != 200 || r.header.Get(apitype.HeaderServedBy) != ac.c.ID(leader) {
		t.Errorf("consistent: %d by %q", r.code, r.header.Get(apitype.HeaderServedBy))
	}
	// A 404 comes back from the leader as is.
	r = do(t, nil, "GET", ac.url(f)+"/agents/"+agentID(5000), nil)
	if r.code != 404 {
		t.Errorf("unknown agent via follower: %d %s", r.code, r.body)
	}
	// Leader status.
	var l apitype.Leader
	do(t, nil, "GET", ac.url(f)+"/v1/status/leader", nil).decode(t, &l)
	if l.ID != ac.c.ID(leader) || l.HTTPAddr == "" || l.RaftAddr != ac.c.Addr(leader) {
		t.Errorf("leader %+v", l)
	}
}

func TestAPI_BlockingQueryThroughFollower(t *testing.T) {
	ac := makeAPICluster(t, 3, nil)
	leader := ac.c.WaitForLeader(t, 10*time.Second)
	idx := loadAgents(ac, 10)
	f := ac.c.Followers(leader)[0]
	done := make(chan response, 1)
	go func() {
		done <- do(t, nil, "GET", fmt.Sprintf("%s/agents?index=%d&wait=20s", ac.url(f), idx), nil)
	}()
	select {
	case r := <-done:
		t.Fatalf("returned before a change: %d %s", r.code, r.body)
	case <-time.After(200 * time.Millisecond):
	}
	idx2 := ac.upsert(rec(77, consensus.StatusOnline, 1, 1, 1, "none"))
	select {
	case r := <-done:
		if r.code != 200 || r.header.Get(apitype.HeaderIndex) != strconv.FormatUint(idx2, 10) {
			t.Fatalf("%d index %s, want %d", r.code, r.header.Get(apitype.HeaderIndex), idx2)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocking query through a follower did not return")
	}
}

func TestAPI_OperatorPeersAndRemove(t *testing.T) {
	ac := makeAPICluster(t, 3, nil)
	leader := ac.c.WaitForLeader(t, 10*time.Second)
	fs := ac.c.Followers(leader)
	var peers []apitype.Peer
	r := do(t, nil, "GET", ac.url(fs[0])+"/v1/operator/raft/peers", nil)
	r.decode(t, &peers)
	if len(peers) != 3 {
		t.Fatalf("peers %s", r.body)
	}
	for _, p := range peers {
		want := apitype.PeerFollower
		if p.ID == ac.c.ID(leader) {
			want = apitype.PeerLeader
		}
		if p.State != want || !p.Voter {
			t.Errorf("peer %+v, want state %s", p, want)
		}
	}
	// Remove follower 1 through follower 0: forwarded to the leader.
	r = do(t, nil, "DELETE", ac.url(fs[0])+"/v1/operator/raft/peers/"+ac.c.ID(fs[1]), nil)
	if r.code != 200 {
		t.Fatalf("remove: %d %s", r.code, r.body)
	}
	testwait.Until(t, 5*time.Second, "2 peers", func() (bool, string) {
		servers, err := ac.c.Store(leader).Servers()
		return err == nil && len(servers) == 2, fmt.Sprintf("%d servers (%v)", len(servers), err)
	})
}

// TestAPI_LeaderKillUnderLoad is the failover goal: with steady
// default-mode load on the followers, killing the leader costs no failed
// request, and answers resume within a couple of seconds.
func TestAPI_LeaderKillUnderLoad(t *testing.T) {
	ac := makeAPICluster(t, 3, nil)
	leader := ac.c.WaitForLeader(t, 10*time.Second)
	idx := loadAgents(ac, 200)
	followers := ac.c.Followers(leader)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()

	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		failures   []string           // guarded by mu
		servedBy   = map[string]int{} // guarded by mu
		lastOK     atomic.Int64       // unix nanos of the latest success
		killedAt   atomic.Int64
		firstAfter atomic.Int64 // first success started after the kill
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			base := ac.url(followers[w%len(followers)])
			for {
				select {
				case <-stop:
					return
				default:
				}
				started := time.Now()
				resp, err := client.Get(base + "/agents/available-capacity?min_gpu_vram_gb=16")
				if err != nil {
					failed.Add(1)
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					continue
				}
				var caps []apitype.Capacity
				derr := decodeJSON(resp, &caps)
				index, _ := strconv.ParseUint(resp.Header.Get(apitype.HeaderIndex), 10, 64)
				if resp.StatusCode != 200 || derr != nil || len(caps) != 20 || index < idx {
					failed.Add(1)
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%d, %d agents, index %d, %v", resp.StatusCode, len(caps), index, derr))
					mu.Unlock()
					continue
				}
				ok.Add(1)
				lastOK.Store(time.Now().UnixNano())
				if k := killedAt.Load(); k != 0 && started.UnixNano() > k {
					firstAfter.CompareAndSwap(0, time.Now().UnixNano())
				}
				mu.Lock()
				servedBy[resp.Header.Get(apitype.HeaderServedBy)]++
				mu.Unlock()
			}
		})
	}
	testwait.Until(t, 10*time.Second, "steady load", func() (bool, string) {
		n := ok.Load()
		return n >= 100, fmt.Sprintf("%d answers", n)
	})
	before := ok.Load()
	killedAt.Store(time.Now().UnixNano())
	ac.kill(leader)
	newLeader := ac.c.WaitForLeader(t, 10*time.Second)
	testwait.Until(t, 10*time.Second, "answers from the new leader", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		n := servedBy[ac.c.ID(newLeader)]
		return n >= 200, fmt.Sprintf("%d answers from %s", n, ac.c.ID(newLeader))
	})
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("answers: %d before the kill, %d in all; by server %v", before, ok.Load(), servedBy)
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d failed requests across the leader kill; first: %v", n, failures[:min(5, len(failures))])
	}
	resumed := time.Duration(firstAfter.Load() - killedAt.Load())
	t.Logf("first answer to a request sent after the kill: %s after it", resumed)
	if firstAfter.Load() == 0 || resumed > 3*time.Second {
		t.Fatalf("answers resumed %s after the kill, want within a couple of seconds", resumed)
	}
	// The requests in flight at the kill went through the retry path.
	retried := 0
	for _, f := range followers {
		r := do(t, nil, "GET", ac.url(f)+"/metrics", nil)
		for line := range strings.Lines(string(r.body)) {
			if v, ok := strings.CutPrefix(line, `chiffon_http_forwarded_total{result="retried"} `); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				retried += n
			}
		}
	}
	t.Logf("forwarded requests answered after a retry: %d", retried)
	if retried == 0 {
		t.Error("no forwarded request needed a retry: the kill did not hit requests in flight")
	}
}

// TestAPI_FollowerReadIndex covers both ways a follower answers a default
// read: from its replica once it has applied the leader's read index, or by
// relaying the leader's answer when it cannot catch up in time.
func TestAPI_FollowerReadIndex(t *testing.T) {
	leaderFSM := consensus.NewFSM()
	applyFSM(t, leaderFSM, 5, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"), rec(2, consensus.StatusOnline, 30, 8, 32, "nvidia"))
	ls := startServer(t, testConfig(t, leaderFSM, newLeaderRaft("L"), noAddrs))

	followerFSM := consensus.NewFSM()
	applyFSM(t, followerFSM, 3, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"))
	fr := &fakeRaft{id: "F", leaderID: "L", lastContact: time.Now()}
	cfg := testConfig(t, followerFSM, fr, func(id string) (string, error) { return ls.Addr(), nil })
	cfg.ForwardTimeout = 300 * time.Millisecond
	fs := startServer(t, cfg)
	base := "http://" + fs.Addr()

	get := func() (response, []apitype.Capacity) {
		r := do(t, nil, "GET", base+"/v1/agents/available-capacity", nil)
		var caps []apitype.Capacity
		r.decode(t, &caps)
		return r, caps
	}
	// A replica stuck behind: after ForwardTimeout, the leader's answer.
	r, caps := get()
	if r.code != 200 || len(caps) != 2 || r.header.Get(apitype.HeaderIndex) != "5" || r.header.Get(apitype.HeaderServedBy) != "L" {
		t.Fatalf("lagging: %d %s %v", r.code, r.body, r.header)
	}
	// A replica that catches up while the request waits answers itself.
	go func() {
		time.AfterFunc(100*time.Millisecond, func() {
			applyFSM(t, followerFSM, 5, rec(2, consensus.StatusOnline, 30, 8, 32, "nvidia"))
		})
	}()
	r, caps = get()
	if r.code != 200 || len(caps) != 2 || r.header.Get(apitype.HeaderIndex) != "5" || r.header.Get(apitype.HeaderServedBy) != "L" {
		t.Fatalf("caught up: %d %s %v", r.code, r.body, r.header)
	}
	if r := do(t, nil, "GET", base+"/agents/"+agentID(9)+"?consistent", nil); r.code != 404 {
		t.Fatalf("404 rendered locally: %d %s", r.code, r.body)
	}
	m := do(t, nil, "GET", base+"/metrics", nil)
	contains(t, string(m.body), `chiffon_http_forwarded_total{result="local"} 2`, `chiffon_http_forwarded_total{result="ok"} 3`)
	m = do(t, nil, "GET", "http://"+ls.Addr()+"/metrics", nil)
	contains(t, string(m.body), `chiffon_http_requests_total{code="200",route="internal_read_index"} 3`,
		`chiffon_http_requests_total{code="200",route="available_capacity"} 1`)

	// The leader's side: 421 when it does not lead.
	if r := do(t, nil, "GET", base+pathReadIndex, nil); r.code != http.StatusMisdirectedRequest {
		t.Fatalf("read index on a follower: %d %s", r.code, r.body)
	}
}

// TestAPI_ReadIndexBatching checks that concurrent requests share round
// trips, and that a request never joins a round trip already in flight.
func TestAPI_ReadIndexBatching(t *testing.T) {
	var b readIndexBatcher
	var (
		mu      sync.Mutex
		started []time.Time // when each round trip began; guarded by mu
		index   atomic.Uint64
	)
	release := make(chan struct{})
	fetch := func() (readIndexResult, error) {
		mu.Lock()
		started = append(started, time.Now())
		mu.Unlock()
		<-release
		return readIndexResult{index: index.Add(1)}, nil
	}
	type got struct {
		arrived time.Time
		res     readIndexResult
	}
	results := make(chan got, 20)
	var calling atomic.Int64
	for range 20 {
		go func() {
			calling.Add(1)
			arrived := time.Now()
			res, err := b.get(t.Context(), fetch)
			if err != nil {
				t.Error(err)
			}
			results <- got{arrived, res}
		}()
	}
	testwait.Until(t, 5*time.Second, "20 callers", func() (bool, string) {
		n := calling.Load()
		return n >= 20, fmt.Sprintf("%d callers", n)
	})
	// Let round trips finish one at a time until all 20 requests answered.
	var all []got
	for len(all) < 20 {
		select {
		case release <- struct{}{}:
		case g := <-results:
			all = append(all, g)
		case <-time.After(10 * time.Second):
			t.Fatalf("stuck with %d answers", len(all))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d round trips for 20 concurrent requests", len(started))
	if len(started) > 10 {
		t.Errorf("%d round trips for 20 concurrent requests: not batching", len(started))
	}
	for _, g := range all {
		rt := started[g.res.index-1]
		if rt.Before(g.arrived) {
			t.Fatalf("request arrived at %v but got round trip %d started at %v", g.arrived, g.res.index, rt)
		}
	}
}

// TestAPI_RegistryMount_ConsistencyModes: a mount marked Registry (the
// node's work status is one) is served like /v1/agents. A follower whose
// replica lags still answers a default read with the leader's state (a
// client reads its own writes on any orchestrator); ?stale answers from
// the lagging replica; an unknown parameter is refused; ?index= blocks.
func TestAPI_RegistryMount_ConsistencyModes(t *testing.T) {
	ac := makeAPICluster(t, 3, func(_ int, c *Config) {
		reg := c.Registry
		c.Mounts = []Mount{{Name: "probe", Patterns: []string{"/v1/probe"}, Registry: true, Params: []string{"x"},
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(map[string]any{"index": reg.Index(), "x": r.URL.Query().Get("x")})
			})}}
	})
	leader := ac.c.WaitForLeader(t, 10*time.Second)
	loadAgents(ac, 5)
	f := ac.c.Followers(leader)[0]
	ac.c.Disconnect(f) // its replica stops here
	t.Cleanup(func() { ac.c.Reconnect(f) })
	idx, err := ac.c.Store(leader).Apply(consensus.UpsertNodes{At: time.Now(), Nodes: []consensus.Record{
		rec(99, consensus.StatusOnline, 8, 8, 16, "nvidia")}}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		Index uint64 `json:"index"`
		X     string `json:"x"`
	}
	get := func(path string) (response, answer) {
		t.Helper()
		r := do(t, nil, "GET", ac.url(f)+path, nil)
		var a answer
		if r.code == 200 {
			r.decode(t, &a)
		}
		return r, a
	}
	if r, a := get("/v1/probe?x=1"); r.code != 200 || a.Index < idx || a.X != "1" {
		t.Fatalf("default read on a lagging follower: %d %+v (served by %s); want index ≥ %d", r.code, a, r.header.Get(apitype.HeaderServedBy), idx)
	}
	if r, a := get("/v1/probe?stale"); r.code != 200 || a.Index >= idx {
		t.Fatalf("stale read on a lagging follower: %d %+v; want its own replica, below %d", r.code, a, idx)
	}
	r, _ := get("/v1/probe?y=1")
	if msg := errorBody(t, r); r.code != 400 || !strings.Contains(msg, `"y"`) || !strings.Contains(msg, "x") {
		t.Fatalf("unknown parameter: %d %q", r.code, msg)
	}

	// A blocking query on the leader returns when the registry passes the index.
	done := make(chan answer, 1)
	go func() {
		var a answer
		resp, err := http.Get(ac.url(leader) + "/v1/probe?index=" + strconv.FormatUint(idx, 10) + "&wait=10s")
		if err == nil {
			_ = decodeJSON(resp, &a)
		}
		done <- a
	}()
	if _, err := ac.c.Store(leader).Apply(consensus.UpsertNodes{At: time.Now(), Nodes: []consensus.Record{
		rec(98, consensus.StatusOnline, 8, 8, 16, "nvidia")}}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-done:
		if a.Index <= idx {
			t.Fatalf("blocking query answered index %d; want past %d", a.Index, idx)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocking query did not return after a write")
	}
}
