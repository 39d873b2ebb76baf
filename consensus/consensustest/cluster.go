// Package consensustest builds whole consensus clusters inside one test
// process: n Stores on raft's in-memory transport, with partitions, crashes
// and restarts, modelled on raft's own MakeCluster.
package consensustest

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// Options adjusts MakeCluster. The zero value gives an in-memory,
// bootstrapped cluster with fast timings.
type Options struct {
	// OnDisk keeps each node's raft state in BoltDB under t.TempDir()
	// instead of in memory. Restart needs it.
	OnDisk bool
	// NoBootstrap leaves the nodes without a configuration; bootstrap one
	// yourself, or use the nodes as fresh servers to add.
	NoBootstrap bool
	// Config, if set, edits each node's Config after the harness fills it
	// (e.g. to restore DefaultConfig's timings). It is called again with the
	// same index on Restart.
	Config func(i int, cfg *consensus.Config)
	// Logger receives every node's logs. Nil logs Info and up to t.Log.
	Logger *slog.Logger
}

// Cluster is a set of Stores connected through raft.InmemTransport. Its
// methods are for the test goroutine; they fail the test on error.
type Cluster struct {
	t      testing.TB
	opts   Options
	logger *slog.Logger

	mu sync.Mutex
	// nodes are guarded by mu.
	nodes []*node
}

// node is one server of the cluster.
type node struct {
	id    string
	addr  raft.ServerAddress
	dir   string // data dir when OnDisk
	trans *raft.InmemTransport
	store *consensus.Store
	dead  bool // killed and not restarted
	cut   bool // disconnected from everyone
}

// FastConfig returns the harness's node configuration: DefaultConfig with
// shorter timings, in memory unless dir is set. Not much shorter: with a
// 50 ms leader lease a leader stepped down whenever the race detector on a
// busy 2-core CI machine held it up that long, and a test that had just
// found the leader met a follower. The harness checks replication and
// failover, not election speed.
func FastConfig(id, dir string) consensus.Config {
	cfg := consensus.DefaultConfig()
	cfg.NodeID = id
	cfg.DataDir = dir
	cfg.InMemory = dir == ""
	cfg.HeartbeatTimeout = 300 * time.Millisecond
	cfg.ElectionTimeout = 300 * time.Millisecond
	cfg.LeaderLeaseTimeout = 200 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.SnapshotInterval = 100 * time.Millisecond
	return cfg
}

// MakeCluster starts n connected Stores, all bootstrapped with the same
// n-voter configuration unless opts.NoBootstrap. They are closed by
// t.Cleanup. Use WaitForLeader before writing.
func MakeCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, opts: opts, logger: opts.Logger}
	if c.logger == nil {
		c.logger = TestLogger(t, slog.LevelInfo)
	}
	t.Cleanup(c.closeAll)
	for range n {
		c.addNode()
	}
	if !opts.NoBootstrap {
		var servers []raft.Server
		for _, nd := range c.nodes {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(nd.id), Address: nd.addr})
		}
		for _, nd := range c.nodes {
			if err := nd.store.Bootstrap(servers); err != nil {
				t.Fatalf("bootstrap %s: %v", nd.id, err)
			}
		}
	}
	return c
}

// AddNode starts one more Store, connected to every live node but not in the
// raft configuration, and returns its index: the leader can then AddVoter
// it.
func (c *Cluster) AddNode() int {
	c.t.Helper()
	return c.addNode()
}

func (c *Cluster) addNode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := len(c.nodes)
	nd := &node{id: fmt.Sprintf("node-%d", i)}
	nd.addr = raft.ServerAddress("inmem:" + nd.id)
	if c.opts.OnDisk {
		nd.dir = c.t.TempDir()
	}
	c.nodes = append(c.nodes, nd)
	c.startLocked(i)
	return i
}

// startLocked gives node i a fresh transport, connects it and opens a Store
// on its data. c.mu must be held.
func (c *Cluster) startLocked(i int) {
	c.t.Helper()
	nd := c.nodes[i]
	_, nd.trans = raft.NewInmemTransport(nd.addr)
	nd.dead, nd.cut = false, false
	c.connectLocked(i)

	cfg := FastConfig(nd.id, nd.dir)
	cfg.Transport = nd.trans
	cfg.Logger = c.logger
	if c.opts.Config != nil {
		c.opts.Config(i, &cfg)
	}
	s, err := consensus.New(cfg)
	if err != nil {
		c.t.Fatalf("new store %s: %v", nd.id, err)
	}
	if err := s.Open(); err != nil {
		c.t.Fatalf("open store %s: %v", nd.id, err)
	}
	nd.store = s
}

// connectLocked routes node i to and from every live, connected node.
func (c *Cluster) connectLocked(i int) {
	me := c.nodes[i]
	for j, other := range c.nodes {
		if j == i || other.dead || other.cut || other.trans == nil {
			continue
		}
		me.trans.Connect(other.addr, other.trans)
		other.trans.Connect(me.addr, me.trans)
	}
}

// disconnectLocked removes every route to and from node i.
func (c *Cluster) disconnectLocked(i int) {
	me := c.nodes[i]
	me.trans.DisconnectAll()
	for j, other := range c.nodes {
		if j != i && other.trans != nil {
			other.trans.Disconnect(me.addr)
		}
	}
}

// Len returns the number of nodes, dead ones included.
func (c *Cluster) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.nodes)
}

// Store returns node i's current Store (a new one after Restart).
func (c *Cluster) Store(i int) *consensus.Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].store
}

// ID returns node i's raft ID.
func (c *Cluster) ID(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].id
}

// Addr returns node i's transport address.
func (c *Cluster) Addr(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.nodes[i].addr)
}

// Live returns the indexes of nodes that are running and connected.
func (c *Cluster) Live() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i, nd := range c.nodes {
		if !nd.dead && !nd.cut {
			out = append(out, i)
		}
	}
	return out
}

// WaitForLeader waits until exactly one running, connected node is leader
// and every other such node knows it, and returns its index. Disconnected
// nodes are ignored: a cut-off old leader may still believe it leads.
func (c *Cluster) WaitForLeader(t testing.TB, timeout time.Duration) int {
	t.Helper()
	leader := -1
	testwait.Until(t, timeout, "a single leader", func() (bool, string) {
		leader = -1
		live := c.Live()
		for _, i := range live {
			if c.Store(i).IsLeader() {
				if leader >= 0 {
					return false, fmt.Sprintf("two leaders: %s and %s", c.ID(leader), c.ID(i))
				}
				leader = i
			}
		}
		if leader < 0 {
			return false, fmt.Sprintf("no leader among %d live nodes", len(live))
		}
		for _, i := range live {
			if id, _ := c.Store(i).Leader(); id != c.ID(leader) {
				return false, fmt.Sprintf("%s thinks the leader is %q, not %s", c.ID(i), id, c.ID(leader))
			}
		}
		return true, ""
	})
	return leader
}

// Followers returns the running, connected nodes other than leader.
func (c *Cluster) Followers(leader int) []int {
	var out []int
	for _, i := range c.Live() {
		if i != leader {
			out = append(out, i)
		}
	}
	return out
}

// WaitForIndex waits until the registry of every running, connected node
// has applied index.
func (c *Cluster) WaitForIndex(t testing.TB, index uint64, timeout time.Duration) {
	t.Helper()
	testwait.Until(t, timeout, fmt.Sprintf("registry index %d everywhere", index), func() (bool, string) {
		for _, i := range c.Live() {
			if got := c.Store(i).FSM().Index(); got < index {
				return false, fmt.Sprintf("%s is at %d", c.ID(i), got)
			}
		}
		return true, ""
	})
}

// Disconnect cuts node i off from every other node, both ways. The node
// keeps running.
func (c *Cluster) Disconnect(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.disconnectLocked(i)
	c.nodes[i].cut = true
}

// Reconnect restores node i's routes to and from every running, connected
// node.
func (c *Cluster) Reconnect(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[i].cut = false
	c.connectLocked(i)
}

// Kill crashes node i: its network goes first, then its Store closes
// without leaving the cluster, as if the process died.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := c.nodes[i]
	if nd.dead {
		return
	}
	c.disconnectLocked(i)
	nd.dead = true
	if err := nd.store.Close(); err != nil {
		c.t.Errorf("close %s: %v", nd.id, err)
	}
	_ = nd.trans.Close()
}

// Restart starts node i again on the same data dir, ID and address (killing
// it first if needed). The cluster must be OnDisk: an in-memory node would
// come back empty.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if !c.opts.OnDisk {
		c.t.Fatal("consensustest: Restart needs Options.OnDisk")
	}
	c.Kill(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.startLocked(i)
}

// closeAll closes every Store; it runs in t.Cleanup.
func (c *Cluster) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nd := range c.nodes {
		if nd.store != nil && !nd.dead {
			if err := nd.store.Close(); err != nil {
				c.t.Errorf("close %s: %v", nd.id, err)
			}
			nd.dead = true
		}
		if nd.trans != nil {
			_ = nd.trans.Close()
		}
	}
}

// TestLogger returns a logger that writes to t.Log at level and above. It
// goes quiet once the test's cleanups have run, so that a stray goroutine
// logging late cannot panic the test binary.
func TestLogger(t testing.TB, level slog.Level) *slog.Logger { return testlog.New(t, level) }
