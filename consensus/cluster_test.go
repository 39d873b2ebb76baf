package consensus_test

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/consensus/consensustest"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/hashicorp/raft"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func upsert(ids ...string) consensus.UpsertNodes {
	c := consensus.UpsertNodes{At: t0}
	for _, id := range ids {
		c.Nodes = append(c.Nodes, consensus.Record{
			AgentID: id, Name: "host-" + id, Roles: []string{"desktop"}, Status: consensus.StatusOnline,
			Metrics: consensus.ResourceMetrics{GPUCount: 1, GPUVRAMMaxFreeGB: 20, GPUs: []consensus.GPU{{Name: "RTX 4090", VRAMFreeGB: 20}}},
		})
	}
	return c
}

// apply writes c through the leader and returns its index.
func apply(t *testing.T, c *consensustest.Cluster, leader int, cmd consensus.Command) uint64 {
	t.Helper()
	idx, err := c.Store(leader).Apply(cmd, 2*time.Second)
	if err != nil {
		t.Fatalf("apply on %s: %v", c.ID(leader), err)
	}
	return idx
}

// requireSameRegistry fails unless every live node holds want.
func requireSameRegistry(t *testing.T, c *consensustest.Cluster, want []consensus.Record) {
	t.Helper()
	for _, i := range c.Live() {
		if got := c.Store(i).FSM().List(); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s registry differs:\n got %+v\nwant %+v", c.ID(i), got, want)
		}
	}
}

func ids(rs []consensus.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.AgentID)
	}
	return out
}

func TestCluster_ElectAndReplicate(t *testing.T) {
	c := consensustest.MakeCluster(t, 3, consensustest.Options{})
	leader := c.WaitForLeader(t, 5*time.Second)
	t.Logf("leader is %s", c.ID(leader))

	apply(t, c, leader, upsert("a", "b"))
	last := apply(t, c, leader, consensus.DeleteNodes{At: t0, AgentIDs: []string{"a"}})
	c.WaitForIndex(t, last, 5*time.Second)
	want := c.Store(leader).FSM().List()
	if got := ids(want); !reflect.DeepEqual(got, []string{"b"}) {
		t.Fatalf("leader registry %v, want [b]", got)
	}
	requireSameRegistry(t, c, want)

	follower := c.Followers(leader)[0]
	_, err := c.Store(follower).Apply(upsert("x"), time.Second)
	if !errors.Is(err, consensus.ErrNotLeader) || !errors.Is(err, raft.ErrNotLeader) {
		t.Fatalf("apply on follower = %v, want ErrNotLeader", err)
	}
	if err := c.Store(follower).VerifyLeader(); !errors.Is(err, consensus.ErrNotLeader) {
		t.Fatalf("VerifyLeader on follower = %v, want ErrNotLeader", err)
	}
	if id, _ := c.Store(follower).Leader(); id != c.ID(leader) {
		t.Fatalf("follower thinks the leader is %q", id)
	}
}

// TestCluster_FailoverDefaultTimings kills the leader of a 3-node cluster
// running DefaultConfig's timings and measures how long the survivors take
// to agree on a new leader. Set CHIFFON_FAILOVER_TRIALS for more trials.
func TestCluster_FailoverDefaultTimings(t *testing.T) {
	trials := 3
	if s := os.Getenv("CHIFFON_FAILOVER_TRIALS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("CHIFFON_FAILOVER_TRIALS=%q", s)
		}
		trials = n
	}
	// The claim is "another takes over within seconds": every trial within
	// the bound a user could notice (5 s), and the typical one (the
	// median) within 2 s. A single trial may take longer than 2 s when
	// both cores are busy with other work: a candidate that loses a CPU
	// for a heartbeat timeout splits the vote once.
	const bound, typical = 5 * time.Second, 2 * time.Second
	def := consensus.DefaultConfig()
	c := consensustest.MakeCluster(t, 3, consensustest.Options{
		OnDisk: true, // Restart needs the data
		Config: func(_ int, cfg *consensus.Config) {
			cfg.HeartbeatTimeout = def.HeartbeatTimeout
			cfg.ElectionTimeout = def.ElectionTimeout
			cfg.LeaderLeaseTimeout = def.LeaderLeaseTimeout
			cfg.CommitTimeout = def.CommitTimeout
		},
	})
	leader := c.WaitForLeader(t, 10*time.Second)

	var took []time.Duration
	for trial := range trials {
		last := apply(t, c, leader, upsert(fmt.Sprintf("before-%d", trial)))
		c.WaitForIndex(t, last, 5*time.Second)
		want := c.Store(leader).FSM().List()

		old := leader
		start := time.Now()
		c.Kill(old)
		leader = c.WaitForLeader(t, 10*time.Second)
		d := time.Since(start)
		took = append(took, d)
		t.Logf("trial %d: killed leader %s, %s leads after %v", trial, c.ID(old), c.ID(leader), d)
		if d > bound {
			t.Errorf("trial %d: failover took %v, want under %v", trial, d, bound)
		}

		// The survivors keep the registry and take writes.
		requireSameRegistry(t, c, want)
		last = apply(t, c, leader, upsert(fmt.Sprintf("after-%d", trial)))

		// The old leader comes back as a follower and catches up.
		c.Restart(old)
		c.WaitForIndex(t, last, 10*time.Second)
		if again := c.WaitForLeader(t, 10*time.Second); again != leader {
			t.Logf("leadership moved again to %s after the restart", c.ID(again))
			leader = again
		}
		if c.Store(old).IsLeader() {
			t.Fatalf("restarted %s leads; want follower", c.ID(old))
		}
		requireSameRegistry(t, c, c.Store(leader).FSM().List())
	}
	slices.Sort(took)
	t.Logf("failover over %d trials: min %v, median %v, max %v (heartbeat %v, election %v)",
		trials, took[0], took[len(took)/2], took[len(took)-1], def.HeartbeatTimeout, def.ElectionTimeout)
	if m := took[len(took)/2]; m > typical {
		t.Errorf("median failover %v, want under %v", m, typical)
	}
}

// TestCluster_MinorityPartition cuts the leader off alone: it cannot write,
// the majority elects a new leader, and after reconnecting everyone agrees
// on the majority's log.
func TestCluster_MinorityPartition(t *testing.T) {
	c := consensustest.MakeCluster(t, 3, consensustest.Options{})
	old := c.WaitForLeader(t, 5*time.Second)
	apply(t, c, old, upsert("a"))

	waitLeaderCh(t, c.Store(old), true)

	c.Disconnect(old)
	_, err := c.Store(old).Apply(upsert("lost"), 500*time.Millisecond)
	switch {
	case err == nil:
		t.Fatal("apply on the cut-off leader succeeded")
	case errors.Is(err, consensus.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, consensus.ErrTimeout):
		t.Logf("apply on the cut-off leader failed as it must: %v", err)
	default:
		t.Fatalf("apply on the cut-off leader: unexpected error %v", err)
	}
	waitLeaderCh(t, c.Store(old), false)

	leader := c.WaitForLeader(t, 5*time.Second)
	if leader == old {
		t.Fatal("the cut-off node is still the majority's leader")
	}
	last := apply(t, c, leader, upsert("b"))
	waitLeaderCh(t, c.Store(leader), true)

	c.Reconnect(old)
	c.WaitForIndex(t, last, 5*time.Second)
	leader = c.WaitForLeader(t, 5*time.Second)
	want := c.Store(leader).FSM().List()
	if got := ids(want); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("registry after heal %v, want [a b]", got)
	}
	requireSameRegistry(t, c, want)
}

// waitLeaderCh reads s.LeaderCh until it delivers want.
func waitLeaderCh(t *testing.T, s *consensus.Store, want bool) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case v, ok := <-s.LeaderCh():
			if !ok {
				t.Fatal("LeaderCh closed")
			}
			if v == want {
				return
			}
		case <-timeout:
			t.Fatalf("LeaderCh of %s did not deliver %v", s.ID(), want)
		}
	}
}

func TestCluster_Membership(t *testing.T) {
	c := consensustest.MakeCluster(t, 3, consensustest.Options{})
	leader := c.WaitForLeader(t, 5*time.Second)
	apply(t, c, leader, upsert("a"))

	extra := c.AddNode()
	if err := c.Store(leader).AddVoter(c.ID(extra), c.Addr(extra)); err != nil {
		t.Fatal(err)
	}
	last := apply(t, c, leader, upsert("b"))
	c.WaitForIndex(t, last, 5*time.Second)
	requireServers(t, c.Store(leader), []string{c.ID(0), c.ID(1), c.ID(2), c.ID(extra)})
	requireSameRegistry(t, c, c.Store(leader).FSM().List())

	victim := c.Followers(leader)[0]
	if err := c.Store(victim).RemoveServer(c.ID(extra)); !errors.Is(err, consensus.ErrNotLeader) {
		t.Fatalf("RemoveServer on a follower = %v, want ErrNotLeader", err)
	}
	if err := c.Store(leader).RemoveServer(c.ID(victim)); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range c.Len() {
		if i != victim {
			want = append(want, c.ID(i))
		}
	}
	requireServers(t, c.Store(leader), want)
	// The remaining voters see the change too.
	testwait.Until(t, 5*time.Second, "the new configuration everywhere", func() (bool, string) {
		for _, i := range c.Live() {
			if i == victim {
				continue
			}
			got, err := c.Store(i).Servers()
			if err != nil {
				return false, err.Error()
			}
			if len(got) != len(want) {
				return false, fmt.Sprintf("%s sees %d servers", c.ID(i), len(got))
			}
		}
		return true, ""
	})
}

func requireServers(t *testing.T, s *consensus.Store, want []string) {
	t.Helper()
	servers, err := s.Servers()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	leaders := 0
	for _, srv := range servers {
		got = append(got, srv.ID)
		if !srv.Voter {
			t.Errorf("%s is not a voter", srv.ID)
		}
		if srv.Leader {
			leaders++
		}
	}
	slices.Sort(want)
	if !reflect.DeepEqual(got, want) || leaders != 1 {
		t.Fatalf("Servers() = %+v, want ids %v and one leader", servers, want)
	}
}
