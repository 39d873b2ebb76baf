package api

import (
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testnet"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// leaderHeaders returns the three Consul-style headers of an answer, and
// fails the test when one is missing or malformed.
func leaderHeaders(t *testing.T, what string, r response) (index uint64, knownLeader bool, lastContactMS int64) {
	t.Helper()
	var err error
	if index, err = strconv.ParseUint(r.header.Get(apitype.HeaderIndex), 10, 64); err != nil {
		t.Errorf("%s: %s %q", what, apitype.HeaderIndex, r.header.Get(apitype.HeaderIndex))
	}
	switch kl := r.header.Get(apitype.HeaderKnownLeader); kl {
	case "true", "false":
		knownLeader = kl == "true"
	default:
		t.Errorf("%s: %s %q", what, apitype.HeaderKnownLeader, kl)
	}
	if lastContactMS, err = strconv.ParseInt(r.header.Get(apitype.HeaderLastContact), 10, 64); err != nil {
		t.Errorf("%s: %s %q", what, apitype.HeaderLastContact, r.header.Get(apitype.HeaderLastContact))
	}
	return index, knownLeader, lastContactMS
}

// TestAPI_EveryAnswerCarriesLeaderHeaders: every answer, errors included,
// says the registry index, whether the answering node knows a leader and
// how long ago it heard from it, on the leader and on a follower alike.
func TestAPI_EveryAnswerCarriesLeaderHeaders(t *testing.T) {
	leaderFSM := consensus.NewFSM()
	applyFSM(t, leaderFSM, 5, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"))
	ls := startServer(t, testConfig(t, leaderFSM, newLeaderRaft("L"), noAddrs))
	followerFSM := consensus.NewFSM()
	applyFSM(t, followerFSM, 5, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"))
	fr := &fakeRaft{id: "F", leaderID: "L", lastContact: time.Now().Add(-2 * time.Second)}
	fs := startServer(t, testConfig(t, followerFSM, fr, func(string) (string, error) { return ls.Addr(), nil }))

	paths := []struct {
		method, path string
		code         int
	}{
		{"GET", "/v1/agents", 200},
		{"GET", "/agents?stale", 200},
		{"GET", "/v1/agents/" + agentID(1), 200},
		{"GET", "/v1/agents/" + agentID(2) + "?stale", 404},
		{"GET", "/v1/agents/not-a-uuid", 400},
		{"GET", "/v1/agents/available-capacity?consistent", 200},
		{"GET", "/v1/agents?max_stale=1m", 200},
		{"GET", "/v1/agents?max_stale=soon", 400},
		{"GET", "/v1/agents?nope=1", 400},
		{"POST", "/v1/agents", 405},
		{"GET", "/v1/work", 404},
		{"GET", "/v1/status/leader", 200},
		{"GET", "/v1/status/peers", 200},
		{"GET", "/v1/operator/raft/peers?stale", 200},
		{"GET", "/healthz", 200},
		{"GET", "/readyz", 200},
		{"GET", "/metrics", 200},
		{"GET", "/no/such/path", 404},
	}
	for _, node := range []struct {
		name string
		addr string
		// minLC and maxLC bound the node's own last contact, in ms.
		minLC, maxLC int64
	}{{"leader", ls.Addr(), 0, 0}, {"follower", fs.Addr(), 2000, 60_000}} {
		for _, p := range paths {
			what := node.name + " " + p.method + " " + p.path
			r := do(t, nil, p.method, "http://"+node.addr+p.path, nil)
			if r.code != p.code {
				t.Errorf("%s: %d %s, want %d", what, r.code, r.body, p.code)
				continue
			}
			idx, known, lc := leaderHeaders(t, what, r)
			if idx != 5 || !known {
				t.Errorf("%s: index %d known leader %v; want 5, true", what, idx, known)
			}
			// A follower's default read may come back with the leader's
			// headers (a relayed answer: last contact 0); its own
			// answers carry its own last contact.
			if by := r.header.Get(apitype.HeaderServedBy); by == "F" && node.name == "follower" && (lc < node.minLC || lc > node.maxLC) ||
				node.name == "leader" && lc != 0 {
				t.Errorf("%s: last contact %d ms (served by %s), want %d..%d", what, lc, by, node.minLC, node.maxLC)
			}
		}
	}
	// A follower without a leader says so on its errors too.
	fr.mu.Lock()
	fr.leaderID = ""
	fr.mu.Unlock()
	r := do(t, nil, "GET", "http://"+fs.Addr()+"/v1/agents/x", nil)
	if _, known, lc := leaderHeaders(t, "leaderless 400", r); r.code != 400 || known || lc < 2000 {
		t.Errorf("leaderless follower's 400: %d known %v last contact %d", r.code, known, lc)
	}
}

// TestAPI_MaxStale: ?max_stale=D answers from the follower's replica while
// it heard from the leader within D, forwards to the leader once it did
// not, and refuses with 503 saying which figure was too old when no leader
// can be asked. Bad values are 400.
func TestAPI_MaxStale(t *testing.T) {
	leaderFSM := consensus.NewFSM()
	applyFSM(t, leaderFSM, 5, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"), rec(2, consensus.StatusOnline, 30, 8, 32, "nvidia"))
	ls := startServer(t, testConfig(t, leaderFSM, newLeaderRaft("L"), noAddrs))
	followerFSM := consensus.NewFSM()
	applyFSM(t, followerFSM, 3, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"))
	fr := &fakeRaft{id: "F", leaderID: "L"}
	cfg := testConfig(t, followerFSM, fr, func(string) (string, error) { return ls.Addr(), nil })
	cfg.LeaderWait, cfg.ForwardTimeout = 300*time.Millisecond, 300*time.Millisecond
	fs := startServer(t, cfg)
	setContact := func(ago time.Duration, leader string) {
		fr.mu.Lock()
		defer fr.mu.Unlock()
		fr.leaderID, fr.lastContact = leader, time.Time{}
		if ago >= 0 {
			fr.lastContact = time.Now().Add(-ago)
		}
	}
	read := func(query string) (response, []apitype.Agent) {
		t.Helper()
		r := do(t, nil, "GET", "http://"+fs.Addr()+"/v1/agents?"+query, nil)
		var out []apitype.Agent
		if r.code == 200 {
			r.decode(t, &out)
		}
		return r, out
	}

	setContact(time.Second, "L")
	if r, a := read("max_stale=5s"); r.code != 200 || len(a) != 1 || r.header.Get(apitype.HeaderServedBy) != "F" {
		t.Fatalf("fresh enough: %d %d agents served by %s; want the follower's 1", r.code, len(a), r.header.Get(apitype.HeaderServedBy))
	}
	setContact(10*time.Second, "L")
	if r, a := read("max_stale=5s"); r.code != 200 || len(a) != 2 || r.header.Get(apitype.HeaderServedBy) != "L" || r.header.Get(apitype.HeaderIndex) != "5" {
		t.Fatalf("too stale, leader reachable: %d %d agents served by %s index %s; want the leader's 2 at 5",
			r.code, len(a), r.header.Get(apitype.HeaderServedBy), r.header.Get(apitype.HeaderIndex))
	}
	// ?stale alone still answers from the replica, however old.
	if r, a := read("stale"); r.code != 200 || len(a) != 1 {
		t.Fatalf("plain stale: %d %d agents", r.code, len(a))
	}
	setContact(10*time.Second, "")
	r, _ := read("max_stale=5s")
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("too stale, no leader: %d %s", r.code, r.body)
	}
	contains(t, errorBody(t, r), "max_stale=5s", "last heard from the leader 10", "no raft leader answered")
	setContact(-1, "")
	r, _ = read("max_stale=1h")
	if r.code != http.StatusServiceUnavailable {
		t.Fatalf("never in contact: %d %s", r.code, r.body)
	}
	contains(t, errorBody(t, r), "max_stale=1h0m0s", "never heard from a leader")

	// The leader is never too stale, even at 0.
	if r := do(t, nil, "GET", "http://"+ls.Addr()+"/v1/agents?max_stale=0s", nil); r.code != 200 || r.header.Get(apitype.HeaderServedBy) != "L" {
		t.Fatalf("leader with max_stale=0s: %d %s", r.code, r.body)
	}
	for _, q := range []string{"max_stale=soon", "max_stale=-1s", "max_stale=5", "max_stale=5s&consistent", "max_stale=1s&max_stale=2s"} {
		r := do(t, nil, "GET", "http://"+fs.Addr()+"/v1/agents?"+q, nil)
		if r.code != 400 {
			t.Errorf("%s: %d %s, want 400", q, r.code, r.body)
			continue
		}
		contains(t, errorBody(t, r), "max_stale")
	}
}

// TestAPI_MaxStaleFollowerCutOff: a real follower whose raft and route to
// the leader's API are cut answers ?max_stale reads from its replica only
// while its last contact is within the bound; past it, it refuses with
// 503 (no leader to forward to), while ?stale still answers and the rest
// of the cluster answers ?max_stale as before.
func TestAPI_MaxStaleFollowerCutOff(t *testing.T) {
	ac := makeAPICluster(t, 3, func(_ int, c *Config) { c.LeaderWait = 500 * time.Millisecond })
	leader := ac.c.WaitForLeader(t, 10*time.Second)
	// The nodes reach the leader's API through a proxy that can drop
	// everything.
	proxy := testnet.NewProxy(t, ac.srv[leader].Addr())
	ac.mu.Lock()
	ac.addrs[ac.c.ID(leader)] = proxy.Addr()
	ac.mu.Unlock()
	ac.upsert(rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"))
	fol := ac.c.Followers(leader)
	cut, other := fol[0], fol[1]
	get := func(node int, query string) response {
		return do(t, nil, "GET", ac.url(node)+"/v1/agents?"+query, nil)
	}
	if r := get(cut, "max_stale=1s"); r.code != 200 || r.header.Get(apitype.HeaderServedBy) != ac.c.ID(cut) {
		t.Fatalf("before the cut: %d %s served by %s", r.code, r.body, r.header.Get(apitype.HeaderServedBy))
	}
	ac.c.Disconnect(cut)
	proxy.Blackhole(true)
	testwait.Until(t, 10*time.Second, "the cut follower's last contact past 1s", func() (bool, string) {
		r := get(cut, "stale")
		_, _, lc := leaderHeaders(t, "stale read on the cut follower", r)
		return r.code == 200 && lc > 1000, "last contact " + strconv.FormatInt(lc, 10) + " ms"
	})
	r := get(cut, "max_stale=1s")
	if r.code != http.StatusServiceUnavailable {
		t.Fatalf("cut follower, max_stale=1s: %d %s", r.code, r.body)
	}
	contains(t, errorBody(t, r), "max_stale=1s", "last heard from the leader")
	if _, _, lc := leaderHeaders(t, "the refusal", r); lc <= 1000 {
		t.Errorf("the refusal's last contact %d ms, want over 1000", lc)
	}
	proxy.Blackhole(false)
	if r := get(other, "max_stale=1s"); r.code != 200 || r.header.Get(apitype.HeaderServedBy) != ac.c.ID(other) {
		t.Fatalf("connected follower: %d %s served by %s", r.code, r.body, r.header.Get(apitype.HeaderServedBy))
	}
}

// TestAPI_AgentFlapScoreAndHistory: GET /v1/agents/{id} shows the flap
// score decayed to the answer's moment (the registry keeps it as of the
// last status change) and the status history, oldest first.
func TestAPI_AgentFlapScoreAndHistory(t *testing.T) {
	fsm := consensus.NewFSM()
	changed := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Millisecond)
	r := rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia")
	r.StatusChangedAt, r.FlapScore = changed, 2
	r.History = []consensus.Transition{
		{At: changed.Add(-time.Minute), From: consensus.StatusOnline, To: consensus.StatusSuspect},
		{At: changed, From: consensus.StatusSuspect, To: consensus.StatusOnline},
	}
	applyFSM(t, fsm, 5, r)
	for _, tt := range []struct {
		halfLife time.Duration
		min, max float64
	}{{10 * time.Minute, 0.99, 1.0}, {0, 2, 2}} {
		_, hs := newTestServer(t, fsm, newLeaderRaft("L"), func(c *Config) { c.FlapHalfLife = tt.halfLife })
		for _, path := range []string{"/v1/agents/" + agentID(1), "/v1/agents"} {
			resp := do(t, nil, "GET", hs.URL+path, nil)
			var a apitype.Agent
			if path == "/v1/agents" {
				var all []apitype.Agent
				resp.decode(t, &all)
				a = all[0]
			} else {
				resp.decode(t, &a)
			}
			if a.FlapScore < tt.min || a.FlapScore > tt.max || math.IsNaN(a.FlapScore) {
				t.Errorf("half-life %s, %s: flap_score %v, want %v..%v", tt.halfLife, path, a.FlapScore, tt.min, tt.max)
			}
			if len(a.History) != 2 || a.History[0].To != "suspect" || a.History[1].From != "suspect" || !a.History[1].At.Equal(changed) {
				t.Errorf("%s: history %+v", path, a.History)
			}
		}
	}
}
