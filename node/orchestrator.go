package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/api"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// OrchestratorConfig holds the settings only orchestrators use.
type OrchestratorConfig struct {
	// RaftAddr is the raft bind address (host:port). A 0.0.0.0 host binds
	// every interface and advertises RaftAdvertise, or else a private IP.
	RaftAddr      string
	RaftAdvertise string
	// BootstrapExpect founds a new raft cluster once this many orchestrators
	// without raft state are in the gossip pool; 0 waits to be added by an
	// existing cluster's leader.
	BootstrapExpect int
	// Raft timings (see consensus.DefaultConfig: tuned for a LAN so a new
	// leader emerges within about a second of the old one dying).
	RaftHeartbeatTimeout time.Duration
	RaftElectionTimeout  time.Duration
	RaftLeaseTimeout     time.Duration
	// RaftPreVote runs raft's pre-vote round before an election (raft's
	// default; see consensus.Config.PreVoteDisabled and
	// docs/PERFORMANCE.md for what it does under CPU starvation).
	RaftPreVote bool
	// Liveness rules the leader applies.
	Liveness LivenessConfig
	// ReconcileInterval is how often the leader reconciles with no gossip
	// event; MinReconcileInterval bounds how often it may write (batching:
	// at most 1/MinReconcileInterval raft entries per second, whatever the
	// cluster size).
	ReconcileInterval    time.Duration
	MinReconcileInterval time.Duration
	// Transport replaces raft's TCP transport (in-process tests).
	Transport raft.Transport
	// InMemoryRaft keeps raft's log in memory (tests).
	InMemoryRaft bool
}

// DefaultVoterRoleGrace is how long a raft server may stay in the
// configuration after gossip stops calling it an orchestrator (or loses
// its member). An orchestrator never drops the role by itself, so the
// grace only has to outlast gossip's own repairs: a missed tag update or a
// member list that a restarted leader has not yet synced is mended by
// serf's push-pull within 30 s. Two of those, rounded up, is a minute; a
// bogus voter costs the cluster one failure's worth of tolerance for no
// longer than that.
const DefaultVoterRoleGrace = time.Minute

// DefaultOrchestratorConfig returns the documented defaults.
func DefaultOrchestratorConfig() OrchestratorConfig {
	rc := consensus.DefaultConfig()
	return OrchestratorConfig{
		RaftAddr:             "127.0.0.1:8300",
		RaftHeartbeatTimeout: rc.HeartbeatTimeout,
		RaftElectionTimeout:  rc.ElectionTimeout,
		RaftLeaseTimeout:     rc.LeaderLeaseTimeout,
		RaftPreVote:          !rc.PreVoteDisabled,
		Liveness: LivenessConfig{
			SuspicionTimeout: 90 * time.Second,
			ReapAfter:        72 * time.Hour,
			RefreshInterval:  30 * time.Second,
			DeadServerAfter:  72 * time.Hour,
			VoterRoleGrace:   DefaultVoterRoleGrace,
			FlapHalfLife:     consensus.DefaultFlapHalfLife,
		},
		ReconcileInterval:    time.Second,
		MinReconcileInterval: 250 * time.Millisecond,
	}
}

func (c *OrchestratorConfig) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	if c.Transport == nil {
		if err := checkAddr(c.RaftAddr); err != nil || c.RaftAddr == "" {
			return bad("-raft-addr: %q must be HOST:PORT, e.g. 10.0.0.5:8300", c.RaftAddr)
		}
	}
	if err := checkAddr(c.RaftAdvertise); err != nil {
		return bad("-raft-advertise: %v", err)
	}
	if c.BootstrapExpect < 0 {
		return bad("-bootstrap-expect: %d; must be 0 (join an existing cluster) or more", c.BootstrapExpect)
	}
	for name, d := range map[string]time.Duration{"-suspicion-timeout": c.Liveness.SuspicionTimeout,
		"-reap-after": c.Liveness.ReapAfter, "-dead-server-after": c.Liveness.DeadServerAfter,
		"-voter-role-grace": c.Liveness.VoterRoleGrace, "-flap-half-life": c.Liveness.FlapHalfLife,
		"-raft-heartbeat-timeout": c.RaftHeartbeatTimeout, "-raft-election-timeout": c.RaftElectionTimeout,
		"-raft-lease-timeout": c.RaftLeaseTimeout} {
		if d <= 0 {
			return bad("%s: %s; must be a positive duration", name, d)
		}
	}
	if c.RaftLeaseTimeout > c.RaftHeartbeatTimeout {
		return bad("-raft-lease-timeout (%s) must not exceed -raft-heartbeat-timeout (%s)", c.RaftLeaseTimeout, c.RaftHeartbeatTimeout)
	}
	return nil
}

// raftAdvertise picks the address other orchestrators dial.
func (c *OrchestratorConfig) raftAdvertise() (string, error) {
	if c.RaftAdvertise != "" {
		return c.RaftAdvertise, nil
	}
	host, port, _ := net.SplitHostPort(c.RaftAddr)
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		// The transport advertises what it bound (this also resolves port 0).
		return "", nil
	}
	ip, err := sockaddr.GetPrivateIP()
	if err != nil || ip == "" {
		return "", fmt.Errorf("%w: -raft-addr %s binds every interface and no private IP was found; set -raft-advertise",
			ErrInvalidConfig, c.RaftAddr)
	}
	return net.JoinHostPort(ip, port), nil
}

// openStore opens this orchestrator's raft store (before gossip starts, so
// the raft address in the tags is the real one).
func (n *Node) openStore() error {
	oc := n.cfg.Orchestrator
	sc := consensus.DefaultConfig()
	sc.NodeID = n.agentID
	sc.DataDir = filepath.Join(n.cfg.DataDir, "raft")
	sc.BindAddr = oc.RaftAddr
	sc.Transport = oc.Transport
	sc.InMemory = oc.InMemoryRaft
	sc.HeartbeatTimeout = oc.RaftHeartbeatTimeout
	sc.ElectionTimeout = oc.RaftElectionTimeout
	sc.LeaderLeaseTimeout = oc.RaftLeaseTimeout
	sc.PreVoteDisabled = !oc.RaftPreVote
	sc.Logger = n.cfg.Logger
	if oc.Transport == nil && n.tls != nil {
		sc.TLS = n.tls
		if name := n.cfg.NodeName; !n.tls.IsServer() || (name != "" && tlsutil.VerifyServer(n.tls.Cert.Leaf, name, n.tls.Domain, n.tls.Roots) != nil) {
			n.logger.Warn("this orchestrator's certificate is not a server certificate for its node name: other orchestrators will refuse its raft connections and no leader will add it as a voter",
				"node", name, "subject", n.tls.Cert.Leaf.Subject.CommonName, "names", n.tls.Cert.Leaf.DNSNames)
		}
	}
	if oc.Transport == nil {
		adv, err := oc.raftAdvertise()
		if err != nil {
			return err
		}
		sc.AdvertiseAddr = adv
	}
	st, err := consensus.New(sc)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	if err := st.Open(); err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	n.store = st
	n.raftAddr = st.Addr()
	has, err := st.HasState()
	if err != nil {
		return err
	}
	n.setRaftReady(has)
	return nil
}

// Store is the raft registry (nil on a desktop-only node).
func (n *Node) Store() *consensus.Store { return n.store }

func (n *Node) setRaftReady(v bool) {
	n.mu.Lock()
	n.raftReady = v
	n.mu.Unlock()
}

func (n *Node) isRaftReady() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.raftReady
}

// newLeadership builds the owner of this orchestrator's leader tasks: the
// reconciler (a new one each term, so liveness clocks restart from the
// registry) and the RabbitMQ bridge.
func (n *Node) newLeadership() *leadership {
	oc := n.cfg.Orchestrator
	reconcile := leaderTask{name: "reconciler", run: func(ctx context.Context) {
		r := newReconciler(oc.Liveness, serfView{n.gossip}, n.store, n.cfg.Logger.With("component", "leader"), time.Now)
		r.verify = n.voterCheck()
		// Pushes taken in an earlier term may be older than gossip now.
		n.overlay.Reset()
		defer n.overlay.Reset()
		r.overlay = n.overlay
		leaderLoop(ctx, r, n.wake, oc.ReconcileInterval, oc.MinReconcileInterval)
	}}
	bridge := leaderTask{name: "bridge", run: func(ctx context.Context) {
		// The bridge consumes RabbitMQ only while this node leads.
		if err := n.dispatcher.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			n.logger.Error("work bridge stopped", "err", err)
		}
	}}
	return newLeadership(n.store, n.logger, reconcile, bridge)
}

// runOrchestrator watches the pool for -bootstrap-expect until this node
// has raft state. (Leadership is followed by leadership.monitorLeadership.)
func (n *Node) runOrchestrator() {
	defer n.wg.Done()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	bootLogged := false
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
			if n.isRaftReady() {
				continue
			}
			if id, _ := n.store.Leader(); id != "" {
				n.markRaftReady()
				continue
			}
			if !bootLogged {
				bootLogged = true
				if n.cfg.Orchestrator.BootstrapExpect == 0 {
					n.logger.Info("no raft state: waiting to be added by an existing cluster's leader (use -bootstrap-expect N to found a new cluster)")
				} else {
					n.logger.Info("no raft state: waiting for orchestrators to bootstrap", "expect", n.cfg.Orchestrator.BootstrapExpect)
				}
			}
			n.maybeBootstrap()
		}
	}
}

// markRaftReady records that this node has raft state and says so in its
// tags, so that later newcomers do not bootstrap a second cluster.
func (n *Node) markRaftReady() {
	n.setRaftReady(true)
	if _, err := n.gossip.UpdateInfo(n.info(n.LastSample())); err != nil {
		n.logger.Warn("updating tags failed", "err", err)
	}
}

// maybeBootstrap founds the raft cluster once BootstrapExpect orchestrators
// without raft state are alive in the pool, and none of them has state (an
// existing cluster adds newcomers instead). Every candidate computes the
// same server list, so they all bootstrap the same configuration.
func (n *Node) maybeBootstrap() {
	expect := n.cfg.Orchestrator.BootstrapExpect
	if expect == 0 {
		return
	}
	var servers []raft.Server
	for _, m := range n.gossip.Serf().Members() {
		if m.Status != serf.StatusAlive {
			continue
		}
		info, err := gossip.DecodeTags(m.Tags)
		if err != nil || !info.HasRole(gossip.RoleOrchestrator) || info.RaftAddr == "" {
			continue
		}
		if info.RaftReady && info.AgentID != n.agentID {
			return // a cluster exists; its leader will add us
		}
		if info.AgentID != n.agentID && !n.bootstrapPeerProven(m.Name, info.AgentID, info.RaftAddr) {
			continue // tags are hints: a founder proves it as a voter would
		}
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(info.AgentID),
			Address: raft.ServerAddress(info.RaftAddr)})
	}
	if len(servers) < expect {
		return
	}
	slices.SortFunc(servers, func(a, b raft.Server) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	servers = servers[:expect]
	if !slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == n.agentID }) {
		return // we are not among the founders; the leader will add us
	}
	err := n.store.Bootstrap(servers)
	switch {
	case err == nil:
		n.logger.Info("bootstrapped raft cluster", "servers", len(servers))
	case errors.Is(err, consensus.ErrAlreadyBootstrapped):
	default:
		n.logger.Error("bootstrap failed", "err", err)
		return
	}
	n.markRaftReady()
}

// bootstrapPeerProven checks a would-be founder the way the leader checks
// a voter candidate (voters.go): its server certificate for name over TLS,
// or without TLS that its address answers raft. A proven one is not
// dialled again; a refusal is logged once per candidate.
func (n *Node) bootstrapPeerProven(name, id, addr string) bool {
	k := voterKey{id, addr}
	if n.bootProven[k] {
		return true
	}
	var err error
	if check := n.voterCheck(); check != nil {
		err = check(name, addr)
	} else {
		err = n.store.ProbePeer(id, addr)
	}
	if err == nil {
		n.bootProven[k] = true
		return true
	}
	if !n.bootRefused[k] {
		n.bootRefused[k] = true
		n.logger.Warn("not bootstrapping with a member that claims to be an orchestrator but could not prove it",
			"member", name, "id", id, "addr", addr, "err", err)
	}
	return false
}

// voterCheck is the TLS proof of a voter candidate, or nil without raft
// over TLS.
func (n *Node) voterCheck() voterCheck {
	if n.tls != nil && n.cfg.Orchestrator.Transport == nil {
		return tlsVoterCheck(n.tls)
	}
	return nil
}

// wakeLeader nudges the leader loop after a gossip event; never blocks.
func (n *Node) wakeLeader() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// eventWaker is the gossip handler that wakes the leader loop on member
// events. It must not block serf's event loop, and does not.
type eventWaker struct{ n *Node }

func (e eventWaker) HandleEvent(ev serf.Event) {
	if _, ok := ev.(serf.MemberEvent); ok {
		e.n.wakeLeader()
	}
}

func joinHostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// leaveRaft takes a gracefully leaving orchestrator out of the raft
// configuration. The leader removes a member that serf reports left, but
// serf's leave is best effort: a leader that heard this node fall silent
// before its leave intent sees it failed, and keeps a failed server as a
// voter for DeadServerAfter (a reboot is not a removal). So, once serf has
// left, the node asks the leader for its own removal through the API
// server's leader-forwarded RemovePeer (on the leader it removes itself;
// raft then elects another). "No such peer" means the leader was first:
// done. It gives up at the deadline, saying how to finish by hand.
func (n *Node) leaveRaft(timeout time.Duration) error {
	if n.store == nil || n.api == nil {
		return nil
	}
	id := n.store.ID()
	servers, err := n.store.Servers()
	if err != nil || len(servers) < 2 || !slices.ContainsFunc(servers, func(s consensus.Server) bool { return s.ID == id }) {
		return nil // not a voter, or the last one: nothing to hand over
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err = n.api.RemovePeer(ctx, id)
	if err != nil && !errors.Is(err, api.ErrNoSuchPeer) {
		return fmt.Errorf("still a raft server after %s (%w); remove it with: chiffon operator raft remove-peer %s",
			timeout, err, id)
	}
	n.logger.Info("left the raft configuration", "id", id)
	return nil
}
