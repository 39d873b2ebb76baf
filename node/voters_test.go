package node

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
	"github.com/chiffon-dev/chiffon/internal/tlsutil/tlstest"
)

func orchTags(id, addr string) map[string]string {
	tags, err := gossip.EncodeTags(nil, gossip.NodeInfo{AgentID: id, Roles: []string{gossip.RoleOrchestrator}, RaftAddr: addr})
	if err != nil {
		panic(err)
	}
	return tags
}

// fakeVerifier admits the members in ok and counts every check.
type fakeVerifier struct {
	mu    sync.Mutex
	ok    map[string]bool
	dials map[string]int
}

func (f *fakeVerifier) check(name, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials[name]++
	if f.ok[name] {
		return nil
	}
	return fmt.Errorf("%w: %s presented a client certificate", ErrNoServerCert, addr)
}

// membershipRig is a leader whose raft configuration (fakeServers) and
// gossip pool (scriptedPool) the test edits, on a fake clock.
type membershipRig struct {
	t     *testing.T
	st    *fakeServers
	pool  *scriptedPool
	r     *reconciler
	clock time.Time
	logs  *testlog.Buffer
}

func newMembershipRig(t *testing.T, grace time.Duration) *membershipRig {
	g := &membershipRig{t: t, clock: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC), logs: &testlog.Buffer{},
		st:   &fakeServers{Store: singleStore(t), servers: []consensus.Server{{ID: "leader-id", Address: "10.0.0.1:8300", Voter: true}}},
		pool: &scriptedPool{members: map[string]serf.Member{}}}
	live := LivenessConfig{SuspicionTimeout: 90 * time.Second, ReapAfter: time.Hour, RefreshInterval: time.Minute,
		DeadServerAfter: time.Hour, VoterRoleGrace: grace}
	logger := slog.New(slog.NewTextHandler(g.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g.r = newReconciler(live, g.pool, g.st, logger, func() time.Time { return g.clock })
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(g.logs.String())
		}
	})
	return g
}

// round advances the clock and reconciles raft membership once,
// returning the membership calls it made.
func (g *membershipRig) round(advance time.Duration) []string {
	g.t.Helper()
	g.clock = g.clock.Add(advance)
	g.st.mu.Lock()
	g.st.calls = nil
	g.st.mu.Unlock()
	if err := g.r.reconcileServers(g.clock); err != nil {
		g.t.Fatal(err)
	}
	g.st.mu.Lock()
	defer g.st.mu.Unlock()
	return slices.Clone(g.st.calls)
}

func (g *membershipRig) voters() []string {
	g.st.mu.Lock()
	defer g.st.mu.Unlock()
	var out []string
	for _, s := range g.st.servers {
		out = append(out, s.ID)
	}
	slices.Sort(out)
	return out
}

// TestReconciler_VoterAdmission: gossip tags that say orchestrator make a
// candidate, not a voter. A member that proves it holds a server
// certificate is added; one that cannot (a desktop whose tags were set
// through the serf CLI, a rogue orchestrator with a client certificate) is
// never added, is dialled at most once per backoff, and is logged once.
func TestReconciler_VoterAdmission(t *testing.T) {
	g := newMembershipRig(t, time.Hour)
	v := &fakeVerifier{ok: map[string]bool{"orch-2": true}, dials: map[string]int{}}
	g.r.verify = v.check
	g.pool.set("orch-2", serf.StatusAlive, orchTags("o2", "10.0.0.2:8300"))
	g.pool.set("desk-1", serf.StatusAlive, orchTags("d1", "127.0.0.1:23299"))

	if got := fmt.Sprint(g.round(0)); got != "[add o2 10.0.0.2:8300]" {
		t.Fatalf("first round: calls = %s, want only orch-2 added", got)
	}
	// A minute of rounds every second: the impostor is never added and
	// is dialled once per backoff (0, 5, 15, 35 s), not every round.
	for range 60 {
		if got := g.round(time.Second); len(got) != 0 {
			t.Fatalf("at %s: membership changed: %v", g.clock.Format(time.TimeOnly), got)
		}
	}
	if got := g.voters(); !slices.Equal(got, []string{"leader-id", "o2"}) {
		t.Fatalf("voters = %v, want leader-id and o2", got)
	}
	if d := v.dials["desk-1"]; d < 2 || d > 5 {
		t.Fatalf("impostor dialled %d times in a minute; want one per backoff (about 4)", d)
	}
	if d := v.dials["orch-2"]; d != 1 {
		t.Fatalf("admitted voter dialled %d times, want 1", d)
	}
	if n := strings.Count(g.logs.String(), "refusing raft voter"); n != 1 {
		t.Fatalf("refusal logged %d times, want once (same reason)", n)
	}
	if !strings.Contains(g.logs.String(), "presented a client certificate") {
		t.Fatal("the refusal does not say why")
	}
	// A new raft address is a new candidate, checked at once.
	before := v.dials["desk-1"]
	g.pool.set("desk-1", serf.StatusAlive, orchTags("d1", "127.0.0.1:23300"))
	g.round(time.Second)
	if v.dials["desk-1"] != before+1 {
		t.Fatal("a new raft address was not checked at once")
	}
}

// TestReconciler_VoterAdmissionWithoutTLS: without TLS the leader can
// only check that the candidate's address answers raft; an address that
// points at nothing never becomes a voter, and the leader says membership
// is trusted from gossip.
func TestReconciler_VoterAdmissionWithoutTLS(t *testing.T) {
	g := newMembershipRig(t, time.Hour)
	peer := singleStoreID(t, "o2")
	g.pool.set("orch-2", serf.StatusAlive, orchTags("o2", peer.Addr()))
	g.pool.set("desk-1", serf.StatusAlive, orchTags("d1", "127.0.0.1:1")) // nothing listens on port 1
	if got := fmt.Sprint(g.round(0)); got != "[add o2 "+peer.Addr()+"]" {
		t.Fatalf("calls = %s, want only the raft server added", got)
	}
	for range 10 {
		if got := g.round(time.Second); len(got) != 0 {
			t.Fatalf("membership changed: %v", got)
		}
	}
	if !strings.Contains(g.logs.String(), "raft membership is trusted from gossip") {
		t.Fatal("no warning that membership is trusted from gossip")
	}
}

// TestReconciler_VoterRoleGrace: a voter whose gossip role stops saying
// orchestrator (the heartbeat rewrote injected tags), or whose member is
// gone, is logged at once and removed after the grace, one per round; a
// voter whose role comes back within the grace stays; the leader itself,
// which has no member in this pool, is never removed.
func TestReconciler_VoterRoleGrace(t *testing.T) {
	const grace = time.Minute
	g := newMembershipRig(t, grace)
	g.r.verify = func(string, string) error { return nil }
	for _, n := range []string{"2", "3", "4", "5"} {
		g.pool.set("orch-"+n, serf.StatusAlive, orchTags("o"+n, "10.0.0."+n+":8300"))
	}
	g.round(0)
	if got := g.voters(); len(got) != 5 {
		t.Fatalf("voters = %v, want 5", got)
	}
	g.pool.set("orch-4", serf.StatusAlive, deskTags("o4", 8)) // role gone
	g.pool.remove("orch-5")                                   // member gone
	g.pool.set("orch-3", serf.StatusAlive, deskTags("o3", 8)) // role gone, back soon
	if got := g.round(time.Second); len(got) != 0 {
		t.Fatalf("removed without a grace: %v", got)
	}
	logs := g.logs.String()
	for _, id := range []string{"id=o3", "id=o4", "id=o5"} {
		if !strings.Contains(logs, "raft server is not an orchestrator in gossip") || !strings.Contains(logs, id) {
			t.Fatalf("%s not logged at once:\n%s", id, logs)
		}
	}
	g.round(grace / 2)
	g.pool.set("orch-3", serf.StatusAlive, orchTags("o3", "10.0.0.3:8300"))
	if got := g.round(grace/2 - 2*time.Second); len(got) != 0 {
		t.Fatalf("removed before the grace: %v", got)
	}
	first := g.round(2 * time.Second)
	second := g.round(time.Second)
	got := append(first, second...)
	slices.Sort(got)
	if len(first) != 1 || fmt.Sprint(got) != "[remove o4 remove o5]" {
		t.Fatalf("after the grace: rounds %v then %v, want o4 and o5 removed one per round", first, second)
	}
	for range 5 {
		g.round(time.Minute)
	}
	if got := g.voters(); !slices.Equal(got, []string{"leader-id", "o2", "o3"}) {
		t.Fatalf("voters = %v, want leader-id, o2, o3", got)
	}
}

// TestTLSVoterCheck_ServerCertForThatNode runs the real TLS check against
// raft listeners: a server certificate for the member's own name passes;
// a client certificate, another node's server certificate and a plain-TCP
// raft listener fail.
func TestTLSVoterCheck_ServerCertForThatNode(t *testing.T) {
	ca := tlstest.New(t)
	bundle := func(role tlsutil.Role, name string) *tlsutil.Bundle { return ca.Bundle(t, role, name) }
	open := func(id string, b *tlsutil.Bundle) *consensus.Store {
		sc := consensus.DefaultConfig()
		sc.NodeID, sc.InMemory, sc.BindAddr, sc.TLS = id, true, "127.0.0.1:0", b
		st, err := consensus.New(sc)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Open(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	check := tlsVoterCheck(bundle(tlsutil.RoleServer, "orch-1"))
	orch2 := open("o2", bundle(tlsutil.RoleServer, "orch-2"))
	rogue := open("r", bundle(tlsutil.RoleClient, "rogue"))
	plain := open("p", nil)
	if err := check("orch-2", orch2.Addr()); err != nil {
		t.Fatalf("orch-2 with its server certificate: %v", err)
	}
	for name, addr := range map[string]string{"rogue": rogue.Addr(), "orch-3": orch2.Addr(), "plain": plain.Addr()} {
		if err := check(name, addr); err == nil {
			t.Errorf("%s at %s was admitted", name, addr)
		} else {
			t.Logf("%s refused: %v", name, err)
		}
	}
}

// singleStoreID is a one-voter in-memory raft store on loopback TCP.
func singleStoreID(t *testing.T, id string) *consensus.Store {
	t.Helper()
	sc := consensus.DefaultConfig()
	sc.NodeID, sc.InMemory, sc.BindAddr = id, true, "127.0.0.1:0"
	st, err := consensus.New(sc)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
