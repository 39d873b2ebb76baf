package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// got is one answer fetched in a goroutine (which must not call t.Fatal).
type got struct {
	code  int
	index string
	body  []byte
	err   error
}

func fetch(url string) got {
	resp, err := http.Get(url)
	if err != nil {
		return got{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return got{code: resp.StatusCode, index: resp.Header.Get(apitype.HeaderIndex), body: b, err: err}
}

// TestAPI_LeaderReadWaitsForApply makes the leader's registry lag raft's
// commit index (a follower may already have applied, and answered with,
// index 7 while the leader's FSM is at 5): a default read on the leader
// and the read index it hands out wait until its registry has applied 7,
// and never answer with 5. When the registry does not catch up within
// ReadIndexTimeout the answer is a 503 that says why.
func TestAPI_LeaderReadWaitsForApply(t *testing.T) {
	fsm, fr, _, base := leaderFixture(t, nil)
	fr.mu.Lock()
	fr.commit, fr.commitReg = 7, fsm
	fr.mu.Unlock()

	var wg sync.WaitGroup
	read, ri := make(chan got, 1), make(chan got, 1)
	wg.Go(func() { read <- fetch(base + "/v1/agents/" + agentID(1)) })
	wg.Go(func() { ri <- fetch(base + pathReadIndex) })
	defer wg.Wait()
	testwait.Holds(t, 200*time.Millisecond, "the leader's reads waiting for its registry to apply the commit index", func() (bool, string) {
		select {
		case g := <-read:
			return false, fmt.Sprintf("default read answered %d index %s with the registry at %d of commit 7: %s", g.code, g.index, fsm.Index(), g.body)
		case g := <-ri:
			return false, fmt.Sprintf("read index answered %d %s with the registry at %d of commit 7", g.code, g.body, fsm.Index())
		default:
			return true, ""
		}
	})

	applyFSM(t, fsm, 7, rec(1, consensus.StatusOnline, 4, 8, 32, "nvidia"))
	g := <-read
	if g.err != nil || g.code != http.StatusOK || g.index != "7" {
		t.Fatalf("default read: %d index %q %v: %s", g.code, g.index, g.err, g.body)
	}
	var a apitype.Agent
	if err := json.Unmarshal(g.body, &a); err != nil || a.ModifyIndex != 7 {
		t.Fatalf("default read body: %s (%v), want modify_index 7", g.body, err)
	}
	g = <-ri
	var idx apitype.ReadIndex
	if g.err != nil || g.code != http.StatusOK || json.Unmarshal(g.body, &idx) != nil || idx.Index != 7 {
		t.Fatalf("read index: %d %v: %s, want 7", g.code, g.err, g.body)
	}
}

func TestAPI_LeaderReadApplyTimeoutIs503(t *testing.T) {
	fsm, fr, _, base := leaderFixture(t, func(c *Config) { c.ReadIndexTimeout = 50 * time.Millisecond })
	fr.mu.Lock()
	fr.commit, fr.commitReg = 9, fsm // never applied
	fr.mu.Unlock()
	for _, path := range []string{"/v1/agents", pathReadIndex} {
		r := do(t, nil, "GET", base+path, nil)
		var e apitype.Error
		r.decode(t, &e)
		if r.code != http.StatusServiceUnavailable || !strings.Contains(e.Error, "has not applied its commit index") || r.header.Get("Retry-After") == "" {
			t.Errorf("%s with the registry behind: %d %v %s", path, r.code, r.header, r.body)
		}
	}
	if r := do(t, nil, "GET", base+"/v1/agents?stale", nil); r.code != http.StatusOK {
		t.Errorf("stale read with the registry behind: %d %s", r.code, r.body)
	}
}

// racingRegistry applies a newer version of agent 1 when the answer first
// reads records once armed: a change landing while a read is being
// answered, after the server started on it.
type racingRegistry struct {
	*consensus.FSM
	t     testing.TB
	mu    sync.Mutex
	armed bool // guarded by mu
}

func (r *racingRegistry) race() {
	r.mu.Lock()
	fire := r.armed
	r.armed = false
	r.mu.Unlock()
	if fire {
		applyFSM(r.t, r.FSM, r.FSM.Index()+4, rec(1, consensus.StatusOnline, 2, 8, 32, "nvidia"))
	}
}

func (r *racingRegistry) Get(id string) (consensus.Record, bool) {
	r.race()
	return r.FSM.Get(id)
}

func (r *racingRegistry) List() []consensus.Record {
	r.race()
	return r.FSM.List()
}

// TestAPI_IndexHeaderMatchesBody lands a registry change while a read is
// being answered: X-Chiffon-Index must not be older than the record in
// the body (the lab's index_header_behind_body), for a record and a list.
func TestAPI_IndexHeaderMatchesBody(t *testing.T) {
	fsm := consensus.NewFSM()
	applyFSM(t, fsm, 5, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"))
	reg := &racingRegistry{FSM: fsm, t: t}
	_, hs := newTestServer(t, reg, newLeaderRaft("leader-1"), nil)
	for _, path := range []string{"/v1/agents/" + agentID(1), "/v1/agents"} {
		reg.mu.Lock()
		reg.armed = true
		reg.mu.Unlock()
		r := do(t, nil, "GET", hs.URL+path, nil)
		var modify uint64
		if strings.HasSuffix(path, "/agents") {
			var all []apitype.Agent
			r.decode(t, &all)
			for _, a := range all {
				modify = max(modify, a.ModifyIndex)
			}
		} else {
			var a apitype.Agent
			r.decode(t, &a)
			modify = a.ModifyIndex
		}
		h, err := strconv.ParseUint(r.header.Get(apitype.HeaderIndex), 10, 64)
		if err != nil || h < modify {
			t.Errorf("%s: X-Chiffon-Index %q, body's modify_index %d", path, r.header.Get(apitype.HeaderIndex), modify)
		}
	}
}
