package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testnet"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// readSample is one read the test made.
type readSample struct {
	node       int
	relayed    bool
	start, end time.Time
	err        error
}

// TestAPI_LeaderBlackholeReadsFollowNewLeader partitions the leader the way
// a dropped-packet partition does: raft is cut off and its HTTP API takes
// connections but never answers. Default reads on the two followers keep
// going throughout; each must succeed, and none may wait for the old
// leader beyond the new leader's election: a read in flight at the cut is
// answered within a second of the election, as is every read after it.
func TestAPI_LeaderBlackholeReadsFollowNewLeader(t *testing.T) {
	def := DefaultConfig()
	var proxies []*testnet.Proxy
	ac := makeAPICluster(t, 3, func(_ int, c *Config) {
		// The product's waits: the point is that reads do not sit them out.
		c.LeaderWait, c.ForwardTimeout = def.LeaderWait, def.ForwardTimeout
	})
	// Every node reaches every other's API through a proxy.
	for i := range ac.c.Len() {
		ac.mu.Lock()
		p := testnet.NewProxy(t, ac.srv[i].Addr())
		ac.addrs[ac.c.ID(i)] = p.Addr()
		ac.mu.Unlock()
		proxies = append(proxies, p)
	}
	leader := ac.c.WaitForLeader(t, 10*time.Second)
	idx := loadAgents(ac, 20)
	followers := ac.c.Followers(leader)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 2 * (def.LeaderWait + def.ForwardTimeout)}
	defer client.CloseIdleConnections()

	// Two kinds of default read: one rendered locally after a read index
	// from the leader, one relayed from the leader (the raft peers).
	readOnce := func(node int, relayed bool) readSample {
		smp := readSample{node: node, relayed: relayed, start: time.Now()}
		path := "/agents"
		if relayed {
			path = pathOperatorPeers
		}
		resp, err := client.Get(ac.url(node) + path)
		smp.end = time.Now()
		if err != nil {
			smp.err = err
			return smp
		}
		var items []json.RawMessage
		derr := decodeJSON(resp, &items)
		index, _ := strconv.ParseUint(resp.Header.Get(apitype.HeaderIndex), 10, 64)
		want := 20
		if relayed {
			want = 3
		}
		if resp.StatusCode != http.StatusOK || derr != nil || len(items) != want || index < idx {
			smp.err = fmt.Errorf("GET %s: %d, %d items, index %d, %v", path, resp.StatusCode, len(items), index, derr)
		}
		return smp
	}
	// Warm up: the followers' pooled connections to the leader exist, so
	// the cut hits requests on open connections, not only new dials.
	for _, f := range followers {
		for _, relayed := range []bool{false, true} {
			if smp := readOnce(f, relayed); smp.err != nil {
				t.Fatalf("read on %s before the cut: %v", ac.c.ID(f), smp.err)
			}
		}
	}

	var (
		mu      sync.Mutex
		samples []readSample // guarded by mu
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopReaders := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopReaders()
	const perNode = 3
	for _, f := range followers {
		for k := range perNode {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					smp := readOnce(f, k == 0)
					mu.Lock()
					samples = append(samples, smp)
					mu.Unlock()
				}
			})
		}
	}
	// Let the readers get going against the healthy cluster.
	testwait.Until(t, 10*time.Second, "reads before the cut", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(samples) >= 2*perNode*len(followers), fmt.Sprintf("%d reads", len(samples))
	})

	cut := time.Now()
	proxies[leader].Blackhole(true)
	ac.c.Disconnect(leader)
	var newLeader int
	elected := cut.Add(testwait.Until(t, 15*time.Second, "a new leader among the followers", func() (bool, string) {
		for _, f := range followers {
			if ac.c.Store(f).IsLeader() {
				newLeader = f
				return true, ""
			}
		}
		return false, "none yet"
	}))
	t.Logf("new leader %s elected %s after the cut", ac.c.ID(newLeader), elected.Sub(cut))
	const grace = time.Second
	// Keep reading until well past the bound, then stop: every read
	// started by then has ended, within its client timeout.
	testwait.Until(t, 30*time.Second, "reads past the bound", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range samples {
			if s.start.After(elected.Add(grace)) {
				n++
			}
		}
		return n >= 2*perNode*len(followers), fmt.Sprintf("%d reads started after the bound", n)
	})
	stopReaders()

	mu.Lock()
	defer mu.Unlock()
	var (
		failures         []error
		during, slowLate int
		latest           time.Time
		slowest          time.Duration
	)
	for _, s := range samples {
		if s.end.Before(cut) {
			continue
		}
		during++
		if s.err != nil {
			failures = append(failures, fmt.Errorf("read (relayed %t) on %s started %s after the cut: %w", s.relayed, ac.c.ID(s.node), s.start.Sub(cut), s.err))
			continue
		}
		if s.start.Before(elected) && s.end.After(latest) {
			latest = s.end
		}
		if !s.start.Before(elected) {
			slowest = max(slowest, s.end.Sub(s.start))
			if s.end.Sub(s.start) > grace {
				slowLate++
			}
		}
	}
	t.Logf("%d reads from the cut on; reads in flight before the election were all answered %s after the cut; slowest read started after it: %s",
		during, latest.Sub(cut), slowest)
	if len(failures) > 0 {
		t.Errorf("%d reads failed across the blackhole; first: %v", len(failures), errors.Join(failures[:min(3, len(failures))]...))
	}
	if bound := elected.Add(grace); latest.After(bound) {
		t.Errorf("a read in flight before the election was answered %s after the cut, over the election (%s) + %s",
			latest.Sub(cut), elected.Sub(cut), grace)
	}
	if slowLate > 0 {
		t.Errorf("%d reads started after the election took over %s (slowest %s)", slowLate, grace, slowest)
	}
}

// TestAPI_RoundTripFollowsLeaderChange checks both round trips a follower
// makes to the leader (a read index, a relayed read) on their own: while
// one hangs on a leader that takes the connection but never answers, raft
// reports another leader, and the read is answered by that one at once,
// long before any timeout of the path would end the wait.
func TestAPI_RoundTripFollowsLeaderChange(t *testing.T) {
	leaderFSM := consensus.NewFSM()
	applyFSM(t, leaderFSM, 5, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"))
	ls := startServer(t, testConfig(t, leaderFSM, newLeaderRaft("L2"), noAddrs))

	for _, tc := range []struct{ name, path string }{
		{"read index", "/agents"},
		{"relayed", pathOperatorPeers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hung := testnet.NewProxy(t, ls.Addr())
			hung.Blackhole(true)
			addrs := map[string]string{"L1": hung.Addr(), "L2": ls.Addr()}
			fr := &fakeRaft{id: "F", leaderID: "L1", leaderAddr: "raft-L1"}
			const long = time.Minute
			// The follower's replica is up to date: only the round trip
			// to the leader can hold the read up.
			followerFSM := consensus.NewFSM()
			applyFSM(t, followerFSM, 5, rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"))
			_, hs := newTestServer(t, followerFSM, fr, func(c *Config) {
				c.LeaderHTTPAddr = func(id string) (string, error) { return addrs[id], nil }
				c.LeaderWait, c.ForwardTimeout, c.ReadIndexTimeout = long, long, long
			})
			type answer struct {
				code int
				by   string
				err  error
			}
			got := make(chan answer, 1)
			go func() {
				resp, err := http.Get(hs.URL + tc.path)
				if err != nil {
					got <- answer{err: err}
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				got <- answer{code: resp.StatusCode, by: resp.Header.Get(apitype.HeaderServedBy)}
			}()
			testwait.Until(t, 10*time.Second, "the follower's request at the hung leader", func() (bool, string) {
				return hung.Conns() > 0, "no connection yet"
			})
			changed := time.Now()
			fr.mu.Lock()
			fr.leaderID, fr.leaderAddr = "L2", "raft-L2"
			fr.mu.Unlock()
			select {
			case a := <-got:
				if a.err != nil || a.code != http.StatusOK || a.by != "L2" {
					t.Fatalf("answer %d served by %q, %v; want 200 from L2", a.code, a.by, a.err)
				}
				t.Logf("answered by the new leader %s after the change", time.Since(changed))
			case <-time.After(10 * time.Second):
				t.Fatalf("no answer 10 s after raft reported a new leader")
			}
		})
	}
}
