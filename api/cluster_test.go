package api

import (
	"context"
	"encoding/json"
	"errors"
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

// errLeaderMoved says that a check met a change of leader.
var errLeaderMoved = errors.New("leadership moved")

// checkLeader checks that id, the node that answered what, is leader. When
// it is not because leadership moved meanwhile (a busy machine may hold a
// leader up past its lease), it returns errLeaderMoved for the caller to
// try again under the new leader; otherwise it fails the test.
func (ac *apiCluster) checkLeader(t testing.TB, id string, leader int, what string) error {
	t.Helper()
	if id == ac.c.ID(leader) {
		return nil
	}
	if now := ac.c.WaitForLeader(t, 10*time.Second); now != leader {
		return fmt.Errorf("%s: %w from %s to %s", what, errLeaderMoved, ac.c.ID(leader), ac.c.ID(now))
	}
	t.Fatalf("%s: answered by %q, want the leader %s", what, id, ac.c.ID(leader))
	return nil
}

// underOneLeader runs check with the current leader until a run ends
// without the leader moving; check fails the test for anything else.
func (ac *apiCluster) underOneLeader(t testing.TB, check func(leader int) error) {
	t.Helper()
	testwait.Until(t, time.Minute, "the checks under one leader", testwait.Err(func() error {
		return check(ac.c.WaitForLeader(t, 10*time.Second))
	}))
}

func TestAPI_FollowerForwardsToLeader(t *testing.T) {
	ac := makeAPICluster(t, 3, nil)
	ac.c.WaitForLeader(t, 10*time.Second)
	idx := loadAgents(ac, 50)
	ac.underOneLeader(t, func(leader int) error {
		f := ac.c.Followers(leader)[0]
		r := do(t, nil, "GET", ac.url(f)+"/agents/available-capacity?min_gpu_vram_gb=16", nil)
		if r.code != 200 {
			t.Fatalf("%d %s", r.code, r.body)
		}
		if err := ac.checkLeader(t, r.header.Get(apitype.HeaderServedBy), leader, "a default read"); err != nil {
			return err
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
		if r.code != 200 {
			t.Fatalf("consistent: %d %s", r.code, r.body)
		}
		if err := ac.checkLeader(t, r.header.Get(apitype.HeaderServedBy), leader, "a consistent read"); err != nil {
			return err
		}
		// A 404 comes back from the leader as is.
		r = do(t, nil, "GET", ac.url(f)+"/agents/"+agentID(5000), nil)
		if r.code != 404 {
			t.Errorf("unknown agent via follower: %d %s", r.code, r.body)
		}
		// Leader status.
		var l apitype.Leader
		do(t, nil, "GET", ac.url(f)+"/v1/status/leader", nil).decode(t, &l)
		if err := ac.checkLeader(t, l.ID, leader, "the leader status"); err != nil {
			return err
		}
		if l.HTTPAddr == "" || l.RaftAddr != ac.c.Addr(leader) {
			t.Errorf("leader %+v", l)
		}
		return nil
	})
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
	var (
		leader int
		fs     []int
	)
	ac.underOneLeader(t, func(l int) error {
		leader, fs = l, ac.c.Followers(l)
		var peers []apitype.Peer
		r := do(t, nil, "GET", ac.url(fs[0])+"/v1/operator/raft/peers", nil)
		r.decode(t, &peers)
		if len(peers) != 3 {
			t.Fatalf("peers %s", r.body)
		}
		leaders := 0
		for _, p := range peers {
			if p.State == apitype.PeerLeader {
				leaders++
				if err := ac.checkLeader(t, p.ID, leader, "the peer list's leader"); err != nil {
					return err
				}
			} else if p.State != apitype.PeerFollower {
				t.Errorf("peer %+v, want state %s", p, apitype.PeerFollower)
			}
			if !p.Voter {
				t.Errorf("peer %+v is not a voter", p)
			}
		}
		if leaders != 1 {
			t.Errorf("%d leaders in %+v", leaders, peers)
		}
		return nil
	})
	// Remove follower 1 through follower 0: forwarded to the leader.
	r := do(t, nil, "DELETE", ac.url(fs[0])+"/v1/operator/raft/peers/"+ac.c.ID(fs[1]), nil)
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
// request. Every request is answered 200 with the full answer at or past
// the index written before, within what the design allows a request (the
// product's LeaderWait for an election plus one ForwardTimeout attempt),
// and requests sent after the kill are answered by a live leader. How
// fast the election ends is the machine's business, not the test's.
func TestAPI_LeaderKillUnderLoad(t *testing.T) {
	def := DefaultConfig()
	ac := makeAPICluster(t, 3, func(_ int, c *Config) {
		// The product's waits, not testConfig's short ones: an election
		// on a busy machine may take a few seconds, and riding it out is
		// what LeaderWait is for.
		c.LeaderWait, c.ForwardTimeout = def.LeaderWait, def.ForwardTimeout
	})
	bound := def.LeaderWait + def.ForwardTimeout
	ac.c.WaitForLeader(t, 10*time.Second)
	idx := loadAgents(ac, 200)
	ids := map[string]bool{}
	for i := range ac.c.Len() {
		ids[ac.c.ID(i)] = true
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 2 * bound}
	defer client.CloseIdleConnections()

	const workers = 6
	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		failures   []string           // guarded by mu
		targets    []int              // the nodes the workers ask; guarded by mu
		aim        int                // bumped when targets change; guarded by mu
		aimed      [workers]int       // aim of each worker's latest answer; guarded by mu
		victimID   string             // guarded by mu
		servedBy   = map[string]int{} // guarded by mu
		after      [workers]int       // answers to requests sent after the kill, per worker; guarded by mu
		slowest    time.Duration      // guarded by mu
		killedAt   atomic.Int64       // unix nanos once the old leader is gone
		firstAfter atomic.Int64       // when the first request sent after the kill was answered
	)
	fail := func(format string, args ...any) {
		failed.Add(1)
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopWorkers := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWorkers()
	work := func(w int) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			myAim, target, victim := aim, targets[w%len(targets)], victimID
			mu.Unlock()
			base := ac.url(target)
			started := time.Now()
			resp, err := client.Get(base + "/agents/available-capacity?min_gpu_vram_gb=16")
			took := time.Since(started)
			if err != nil {
				fail("%v", err)
				continue
			}
			var caps []apitype.Capacity
			derr := decodeJSON(resp, &caps)
			index, _ := strconv.ParseUint(resp.Header.Get(apitype.HeaderIndex), 10, 64)
			by := resp.Header.Get(apitype.HeaderServedBy)
			if resp.StatusCode != 200 || derr != nil || len(caps) != 20 || index < idx {
				fail("%d, %d agents, index %d, %v", resp.StatusCode, len(caps), index, derr)
				continue
			}
			if took > bound {
				fail("answered in %s, over LeaderWait+ForwardTimeout %s", took, bound)
				continue
			}
			k := killedAt.Load()
			sentAfter := k != 0 && started.UnixNano() > k
			if sentAfter && (by == victim || !ids[by]) {
				fail("a request sent after the kill was served by %q (killed %s)", by, victim)
				continue
			}
			ok.Add(1)
			if sentAfter {
				firstAfter.CompareAndSwap(0, time.Now().UnixNano())
			}
			mu.Lock()
			servedBy[by]++
			slowest = max(slowest, took)
			if sentAfter {
				after[w]++
			}
			aimed[w] = myAim
			mu.Unlock()
		}
	}
	// aimAt points the load at the followers of leader, and waits until
	// every worker has been answered on them.
	aimAt := func(leader int) {
		mu.Lock()
		targets, victimID = ac.c.Followers(leader), ac.c.ID(leader)
		aim++
		want := aim
		mu.Unlock()
		testwait.Until(t, 2*bound, "every worker answered through the followers", testwait.Err(func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(failures) > 0 {
				return nil // reported below
			}
			for w, a := range aimed {
				if a < want {
					return fmt.Errorf("worker %d not yet", w)
				}
			}
			return nil
		}))
	}
	mu.Lock()
	targets = []int{0, 1, 2} // until aimed: any node answers
	mu.Unlock()
	for w := range workers {
		wg.Go(func() { work(w) })
	}
	aimAt(ac.c.WaitForLeader(t, 10*time.Second))
	// Kill the node that leads now: on a busy machine leadership may have
	// moved since the start, and a move puts the load on the new followers
	// first (a client of a killed node sees its connection fail; that is
	// not what this test is about).
	aimedVictim := func() string { mu.Lock(); defer mu.Unlock(); return victimID }
	leader := ac.c.WaitForLeader(t, 10*time.Second)
	for ac.c.ID(leader) != aimedVictim() {
		aimAt(leader)
		leader = ac.c.WaitForLeader(t, 10*time.Second)
	}
	followers := ac.c.Followers(leader)
	before := ok.Load()
	start := time.Now()
	ac.kill(leader)
	killedAt.Store(time.Now().UnixNano())
	// Every worker gets answers to requests it sent after the kill. Each
	// request is bounded by bound, so a few of them are too.
	testwait.Until(t, 4*bound, "answers to requests sent after the kill", testwait.Err(func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) > 0 {
			return nil // reported below
		}
		for w, n := range after {
			if n < 5 {
				return fmt.Errorf("worker %d: %d answers after the kill", w, n)
			}
		}
		return nil
	}))
	stopWorkers()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("answers: %d before the kill, %d in all; by server %v; slowest %s", before, ok.Load(), servedBy, slowest)
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d failed requests across the leader kill; first: %v", n, failures[:min(5, len(failures))])
	}
	t.Logf("first answer to a request sent after the kill: %s after the kill began", time.Duration(firstAfter.Load()-start.UnixNano()))
	// The requests in flight at the kill went through the retry path (a
	// check that the test did what it says, not a speed).
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

// waitingRegistry is a Registry that tells when a reader starts waiting
// for an index, so that a test changes the replica while a request waits
// for it rather than after a guessed delay.
type waitingRegistry struct {
	*consensus.FSM
	waiting chan uint64 // the index waited past; sent without blocking
}

func (r *waitingRegistry) WaitIndex(ctx context.Context, after uint64) (uint64, error) {
	select {
	case r.waiting <- after:
	default:
	}
	return r.FSM.WaitIndex(ctx, after)
}

// TestAPI_FollowerReadIndex covers both ways a follower answers a default
// read: from its replica once it has applied the leader's read index, or by
// relaying the leader's answer when it cannot catch up in time. Either way
// the answer is the leader's state; the metrics say which way was taken.
func TestAPI_FollowerReadIndex(t *testing.T) {
	leaderFSM := consensus.NewFSM()
	applyFSM(t, leaderFSM, 5, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"), rec(2, consensus.StatusOnline, 30, 8, 32, "nvidia"))
	ls := startServer(t, testConfig(t, leaderFSM, newLeaderRaft("L"), noAddrs))

	followerFSM := consensus.NewFSM()
	applyFSM(t, followerFSM, 3, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"))
	reg := &waitingRegistry{FSM: followerFSM, waiting: make(chan uint64, 1)}
	fr := &fakeRaft{id: "F", leaderID: "L", lastContact: time.Now()}
	fs := startServer(t, testConfig(t, reg, fr, func(id string) (string, error) { return ls.Addr(), nil }))
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
	<-reg.waiting // the lagging request's wait
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	caughtUp := make(chan struct{})
	go func() {
		defer close(caughtUp)
		select {
		case after := <-reg.waiting:
			if after != 3 {
				t.Errorf("waited past index %d, want the replica's 3", after)
			}
			applyFSM(t, followerFSM, 5, rec(2, consensus.StatusOnline, 30, 8, 32, "nvidia"))
		case <-ctx.Done():
		}
	}()
	r, caps = get()
	cancel()
	<-caughtUp
	if r.code != 200 || len(caps) != 2 || r.header.Get(apitype.HeaderIndex) != "5" || r.header.Get(apitype.HeaderServedBy) != "L" {
		t.Fatalf("caught up: %d %s %v", r.code, r.body, r.header)
	}
	if r := do(t, nil, "GET", base+"/agents/"+agentID(9)+"?consistent", nil); r.code != 404 {
		t.Fatalf("404 rendered locally: %d %s", r.code, r.body)
	}
	// Counters, at least (a read-index round trip that times out on a busy
	// machine is retried, and counted again): the two caught-up requests
	// were rendered here, all three were answered through the leader, the
	// lagging one by relaying its answer, and none failed.
	fm := scrape(t, base)
	lm := scrape(t, "http://"+ls.Addr())
	atLeast(t, fm, `chiffon_http_forwarded_total{result="local"}`, 2)
	if n := fm[`chiffon_http_forwarded_total{result="ok"}`] + fm[`chiffon_http_forwarded_total{result="retried"}`]; n != 3 {
		t.Errorf("%v forwarded requests answered, want the 3 made", n)
	}
	if n := fm[`chiffon_http_forwarded_total{result="failed"}`]; n != 0 {
		t.Errorf("%v forwarded requests failed", n)
	}
	atLeast(t, lm, `chiffon_http_requests_total{code="200",route="internal_read_index"}`, 3)
	atLeast(t, lm, `chiffon_http_requests_total{code="200",route="available_capacity"}`, 1)

	// The leader's side: 421 when it does not lead.
	if r := do(t, nil, "GET", base+pathReadIndex, nil); r.code != http.StatusMisdirectedRequest {
		t.Fatalf("read index on a follower: %d %s", r.code, r.body)
	}
}

// scrape reads base's /metrics into a map from series (name and labels,
// as written) to value.
func scrape(t testing.TB, base string) map[string]float64 {
	t.Helper()
	r := do(t, nil, "GET", base+"/metrics", nil)
	if r.code != 200 {
		t.Fatalf("metrics: %d %s", r.code, r.body)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(r.body)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// atLeast fails unless series is in m with a value of at least want.
func atLeast(t testing.TB, m map[string]float64, series string, want float64) {
	t.Helper()
	if v, ok := m[series]; !ok || v < want {
		t.Errorf("%s = %v (present %v), want at least %v", series, v, ok, want)
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
