// Package nodetest runs whole Chiffon nodes — orchestrators and desktops —
// in one process: gossip over loopback UDP/TCP on port 0, raft over
// loopback TCP or raft's in-memory transport, HTTP on 127.0.0.1:0. It is
// the one place where in-process clusters are configured: the node and
// dashboard tests use it through Start, and `chiffon dev` through New, so
// the part that runs a cluster takes no *testing.T.
//
// A Cluster can kill a node (it stops without leaving, as a crashed
// process), stop one gracefully, restart one on the same data dir (so
// with the same agent_id and raft state), add one later, and — with
// InmemRaft — partition raft. A partition cuts raft traffic only: gossip
// keeps flowing (package gossip exposes no memberlist transport to filter;
// the only way to silence a node's gossip is to close it, which Kill does),
// so both sides still see every member alive, and a cut-off leader can
// neither commit nor learn of the majority's writes until Heal.
package nodetest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node"
)

var (
	// ErrUnknownNode means a name that is not a node of the cluster.
	ErrUnknownNode = errors.New("nodetest: unknown node")
	// ErrNameTaken means Add was given the name of an existing node.
	ErrNameTaken = errors.New("nodetest: node name taken")
	// ErrNoPartitions means Partition on a cluster without InmemRaft.
	ErrNoPartitions = errors.New("nodetest: partitions need Config.InmemRaft")
)

// Config configures a Cluster.
type Config struct {
	// Dir holds one data directory per node, Dir/NAME (required).
	Dir string
	// Orchestrators and Desktops name the nodes, in start order. The
	// orchestrators start first, each joining those before it, with
	// bootstrap-expect len(Orchestrators); the desktops then join every
	// orchestrator.
	Orchestrators, Desktops []string
	// Scaled gives every node the test timings of Scale. Without it the
	// nodes keep node.DefaultConfig's timings (chiffon dev).
	Scaled bool
	// InmemRaft runs raft over raft.InmemTransport instead of loopback
	// TCP, so that Partition can cut it. Raft state stays on disk either
	// way, so Restart keeps it.
	InmemRaft bool
	// Logger receives every node's logs with node=NAME; nil discards them.
	Logger *slog.Logger
	// Node, if set, edits each node's config after the cluster has filled
	// it (addresses, data dir, join list, roles, timings, Sampler), before
	// the node is created; an error stops the start. Restart reuses the
	// edited config and does not call it again.
	Node func(name string, c *node.Config) error
}

// Cluster is a set of in-process nodes. Its methods may be called from
// any goroutine; a node's own methods are the node's business.
type Cluster struct {
	cfg    Config
	logger *slog.Logger

	mu sync.Mutex
	// members are the nodes in start order; guarded by mu.
	members []*member
}

// member is one node of the cluster.
type member struct {
	name string
	orch bool
	cfg  node.Config
	n    *node.Node
	up   bool // started and neither killed nor stopped
	// trans is the raft transport of an InmemRaft orchestrator (a new
	// one at each start); cut marks it partitioned off.
	trans *raft.InmemTransport
	cut   bool
	// sampler is the fake a Scaled desktop starts with.
	sampler *Sampler
}

// New checks cfg and returns a cluster that has started nothing.
func New(cfg Config) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("nodetest: Config.Dir is required")
	}
	seen := map[string]bool{}
	for _, name := range slices.Concat(cfg.Orchestrators, cfg.Desktops) {
		if name == "" || seen[name] {
			return nil, fmt.Errorf("%w: %q", ErrNameTaken, name)
		}
		seen[name] = true
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Cluster{cfg: cfg, logger: logger}, nil
}

// Start starts the configured nodes in order and returns at the first
// failure; Close releases what was started either way.
func (c *Cluster) Start(ctx context.Context) error {
	for _, name := range c.cfg.Orchestrators {
		if _, err := c.add(ctx, name, []string{gossip.RoleOrchestrator}, func(nc *node.Config) {
			nc.Orchestrator.BootstrapExpect = len(c.cfg.Orchestrators)
		}); err != nil {
			return err
		}
	}
	for _, name := range c.cfg.Desktops {
		if _, err := c.add(ctx, name, []string{gossip.RoleDesktop}, nil); err != nil {
			return err
		}
	}
	return nil
}

// Add starts one more node with roles, joining every live orchestrator
// (or, with none, every live node). edit, if set, runs after
// Config.Node. An orchestrator added this way has bootstrap-expect 0 (it
// joins the cluster that is there) unless edit says otherwise.
func (c *Cluster) Add(ctx context.Context, name string, roles []string, edit func(*node.Config)) (*node.Node, error) {
	if c.member(name) != nil {
		return nil, fmt.Errorf("%w: %q", ErrNameTaken, name)
	}
	return c.add(ctx, name, roles, edit)
}

func (c *Cluster) add(ctx context.Context, name string, roles []string, edit func(*node.Config)) (*node.Node, error) {
	m := &member{name: name, orch: slices.Contains(roles, gossip.RoleOrchestrator)}
	m.cfg = c.config(name, roles)
	if c.cfg.Scaled && slices.Contains(roles, gossip.RoleDesktop) {
		m.sampler = NewSampler(DefaultSample(c.countDesktops()))
		m.cfg.Sampler = m.sampler
	}
	if c.cfg.Node != nil {
		if err := c.cfg.Node(name, &m.cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if edit != nil {
		edit(&m.cfg)
	}
	c.mu.Lock()
	c.members = append(c.members, m)
	c.mu.Unlock()
	if err := c.start(ctx, m); err != nil {
		return nil, err
	}
	return m.n, nil
}

// config fills a node's config: loopback addresses on port 0, its data
// dir, its logger, and the test timings when Scaled.
func (c *Cluster) config(name string, roles []string) node.Config {
	nc := node.DefaultConfig()
	nc.NodeName = name
	nc.Roles = slices.Clone(roles)
	nc.DataDir = filepath.Join(c.cfg.Dir, name)
	nc.Gossip.BindAddr, nc.Gossip.RPCAddr = "127.0.0.1:0", ""
	nc.Orchestrator.RaftAddr = "127.0.0.1:0"
	nc.API.HTTPAddr = "127.0.0.1:0"
	nc.Work.Addr = "127.0.0.1:0"
	nc.Logger = c.logger.With("node", name)
	if c.cfg.Scaled {
		Scale(&nc)
	}
	return nc
}

func (c *Cluster) countDesktops() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.members {
		if !m.orch {
			n++
		}
	}
	return n
}

// start creates and starts m's node from m.cfg with a fresh join list
// (and, with InmemRaft, a fresh transport on the same address).
func (c *Cluster) start(ctx context.Context, m *member) error {
	c.mu.Lock()
	m.cfg.Gossip.Join = c.seedsLocked(m)
	if c.cfg.InmemRaft && m.orch {
		_, m.trans = raft.NewInmemTransport(raft.ServerAddress("inmem:" + m.name))
		m.cut = false
		c.connectLocked(m)
		m.cfg.Orchestrator.Transport = m.trans
	}
	cfg := m.cfg
	c.mu.Unlock()

	n, err := node.New(cfg)
	if err == nil {
		err = n.Start(ctx)
	}
	if err != nil {
		if n != nil {
			_ = n.Close()
		}
		c.mu.Lock()
		c.dropTransportLocked(m)
		c.mu.Unlock()
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	c.mu.Lock()
	m.n, m.up = n, true
	c.mu.Unlock()
	return nil
}

// seedsLocked returns the gossip addresses m joins: the live
// orchestrators', or every live node's when there is no orchestrator.
func (c *Cluster) seedsLocked(m *member) []string {
	var orchs, all []string
	for _, o := range c.members {
		if o == m || !o.up {
			continue
		}
		all = append(all, o.n.Gossip().Addr())
		if o.orch {
			orchs = append(orchs, o.n.Gossip().Addr())
		}
	}
	if len(orchs) > 0 {
		return orchs
	}
	return all
}

// connectLocked routes m's raft to and from every live member on its side
// of a partition.
func (c *Cluster) connectLocked(m *member) {
	for _, o := range c.members {
		if o == m || o.trans == nil || !o.up || o.cut != m.cut {
			continue
		}
		m.trans.Connect(o.trans.LocalAddr(), o.trans)
		o.trans.Connect(m.trans.LocalAddr(), m.trans)
	}
}

// dropTransportLocked cuts and closes m's in-memory raft transport.
func (c *Cluster) dropTransportLocked(m *member) {
	if m.trans == nil {
		return
	}
	m.trans.DisconnectAll()
	for _, o := range c.members {
		if o != m && o.trans != nil {
			o.trans.Disconnect(m.trans.LocalAddr())
		}
	}
	_ = m.trans.Close()
	m.trans = nil
}

func (c *Cluster) member(name string) *member {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.name == name {
			return m
		}
	}
	return nil
}

// Node returns name's current node (the last one started, which may have
// been killed or stopped since), or nil.
func (c *Cluster) Node(name string) *node.Node {
	if m := c.member(name); m != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		return m.n
	}
	return nil
}

// Sampler returns the fake sampler a Scaled desktop started with (nil for
// an orchestrator, or when Config.Node replaced it).
func (c *Cluster) Sampler(name string) *Sampler {
	m := c.member(name)
	if m == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.cfg.Sampler == node.Sampler(m.sampler) {
		return m.sampler
	}
	return nil
}

// Up reports whether name is running: started, and neither killed nor
// stopped since.
func (c *Cluster) Up(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.name == name {
			return m.up
		}
	}
	return false
}

// Names returns every node's name in start order, live or not.
func (c *Cluster) Names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.members {
		out = append(out, m.name)
	}
	return out
}

// Nodes, Orchestrators and Desktops return the live nodes of each kind,
// in start order. A node with both roles counts as an orchestrator.
func (c *Cluster) Nodes() []*node.Node { return c.live(func(*member) bool { return true }) }

// Orchestrators returns the live orchestrators in start order.
func (c *Cluster) Orchestrators() []*node.Node { return c.live(func(m *member) bool { return m.orch }) }

// Desktops returns the live desktops (that are not orchestrators too).
func (c *Cluster) Desktops() []*node.Node { return c.live(func(m *member) bool { return !m.orch }) }

func (c *Cluster) live(keep func(*member) bool) []*node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*node.Node
	for _, m := range c.members {
		if m.up && keep(m) {
			out = append(out, m.n)
		}
	}
	return out
}

// Leader returns the live orchestrator that leads raft now, or nil. An
// orchestrator partitioned off is not asked: a cut-off old leader may
// believe it still leads until its lease runs out.
func (c *Cluster) Leader() *node.Node {
	name := c.LeaderName()
	if name == "" {
		return nil
	}
	return c.Node(name)
}

// LeaderName is Leader's name, or "".
func (c *Cluster) LeaderName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.up && m.orch && !m.cut && m.n.Store().IsLeader() {
			return m.name
		}
	}
	return ""
}

// Kill crashes name: raft is cut first (InmemRaft), then the node closes
// without leaving, so its peers must detect the failure.
func (c *Cluster) Kill(name string) error {
	m := c.member(name)
	if m == nil {
		return fmt.Errorf("%w: %q", ErrUnknownNode, name)
	}
	c.mu.Lock()
	if !m.up {
		c.mu.Unlock()
		return nil
	}
	m.up = false
	n := m.n
	if m.trans != nil {
		m.trans.DisconnectAll()
		for _, o := range c.members {
			if o != m && o.trans != nil {
				o.trans.Disconnect(m.trans.LocalAddr())
			}
		}
	}
	c.mu.Unlock()
	err := n.Close()
	c.mu.Lock()
	c.dropTransportLocked(m)
	c.mu.Unlock()
	return err
}

// Stop stops name gracefully: it leaves (serf, and raft for an
// orchestrator), then closes.
func (c *Cluster) Stop(name string) error {
	m := c.member(name)
	if m == nil {
		return fmt.Errorf("%w: %q", ErrUnknownNode, name)
	}
	if !c.Up(name) {
		return nil
	}
	err := c.Node(name).Leave()
	return errors.Join(err, c.Kill(name))
}

// Restart starts name again on the same data dir — so with the same
// agent_id and raft state — killing it first if it runs. It joins the live
// orchestrators.
func (c *Cluster) Restart(ctx context.Context, name string) (*node.Node, error) {
	m := c.member(name)
	if m == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownNode, name)
	}
	if err := c.Kill(name); err != nil {
		c.logger.Warn("close before restart", "member", name, "err", err)
	}
	if err := c.start(ctx, m); err != nil {
		return nil, err
	}
	return m.n, nil
}

// Partition cuts raft between the named orchestrators and all the others
// (each side stays connected within itself) until Heal. Gossip is not cut.
// Leader no longer asks the named side.
func (c *Cluster) Partition(names ...string) error {
	if !c.cfg.InmemRaft {
		return ErrNoPartitions
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, name := range names {
		i := slices.IndexFunc(c.members, func(m *member) bool { return m.name == name })
		if i < 0 {
			return fmt.Errorf("%w: %q", ErrUnknownNode, name)
		}
		c.members[i].cut = true
	}
	for _, a := range c.members {
		for _, b := range c.members {
			if a != b && a.trans != nil && b.trans != nil && a.cut != b.cut {
				a.trans.Disconnect(b.trans.LocalAddr())
			}
		}
	}
	return nil
}

// Heal undoes Partition: every live orchestrator's raft reaches every
// other again.
func (c *Cluster) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		m.cut = false
	}
	for _, m := range c.members {
		if m.up && m.trans != nil {
			c.connectLocked(m)
		}
	}
}

// Ready reports nil once a leader's registry has every live node online,
// and ctx's error wrapped with how many were online when ctx ends first.
func (c *Cluster) Ready(ctx context.Context) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		online, want := c.online()
		if online == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("only %d of %d nodes are online in the registry yet: %w", online, want, ctx.Err())
		case <-t.C:
		}
	}
}

// online counts the live nodes the leader's registry shows online.
func (c *Cluster) online() (online, want int) {
	nodes := c.Nodes()
	l := c.Leader()
	if l == nil {
		return 0, len(nodes)
	}
	for _, n := range nodes {
		if r, ok := l.Store().FSM().Get(n.AgentID()); ok && r.Status == consensus.StatusOnline {
			online++
		}
	}
	return online, len(nodes)
}

// Shutdown stops the whole cluster gracefully, then closes it. The
// desktops leave together, so the leader records them as left, and each
// closes as soon as it has left: its heartbeat must not tick after the
// leave (serf's tag update would then wait out its broadcast timeout,
// 5 s). Then the follower orchestrators leave together: the leader records
// them and removes them from raft, which leaves a valid one-voter
// configuration (a restart on the same data dirs grows it back: the leader
// adds the others as they rejoin). The leader itself only closes: nobody
// is left to tell, and serf's leave would wait out its timeout for acks.
// When ctx ends, the leaves still under way are cut short by the close.
func (c *Cluster) Shutdown(ctx context.Context) error {
	leader := c.LeaderName()
	var desks, followers []*node.Node
	c.mu.Lock()
	for _, m := range c.members {
		switch {
		case !m.up || m.name == leader:
		case m.orch:
			followers = append(followers, m.n)
		default:
			desks = append(desks, m.n)
		}
	}
	c.mu.Unlock()
	if leaveAll(ctx, desks, true) {
		leaveAll(ctx, followers, false)
	}
	return c.Close()
}

// leaveAll has the nodes leave in parallel, each closing right after
// when closeAfter; it returns false when ctx cut the wait short. The
// leaves left running then end when Close closes their nodes.
func leaveAll(ctx context.Context, nodes []*node.Node, closeAfter bool) bool {
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			_ = n.Leave() // bounded by the LeaveTimeout
			if closeAfter {
				_ = n.Close()
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// Close closes every node, without leaving, in reverse start order, and
// the in-memory transports. It is idempotent.
func (c *Cluster) Close() error {
	c.mu.Lock()
	ms := slices.Clone(c.members)
	c.mu.Unlock()
	var errs []error
	for i := len(ms) - 1; i >= 0; i-- {
		m := ms[i]
		c.mu.Lock()
		up, n := m.up, m.n
		m.up = false
		c.mu.Unlock()
		if up {
			if err := n.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", m.name, err))
			}
		}
		c.mu.Lock()
		c.dropTransportLocked(m)
		c.mu.Unlock()
	}
	return errors.Join(errs...)
}
