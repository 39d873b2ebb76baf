// Package node is Chiffon's composition root: it wires the resource probe,
// (on orchestrators) the registry, the API and the work bridge, (on desktops
// with a work handler) the work runner, and gossip membership into one
// running node, starts them in that order and stops them in about the
// reverse (see Node.Close).
//
// Size: about 1,800 lines, a little over the house's ~1,500. The package is
// the composition root plus the orchestrator's leader side, and both share
// the Node's lifecycle: leadership.go (one owner: Barrier, then the
// reconciler and the bridge), leader.go (the reconcile loop and liveness
// rules), orchestrator.go (bootstrap-expect and the raft leave). The work
// bridge (node/dispatch) and the desktop's runner (node/worker) are
// already their own packages; the test harness is node/nodetest.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chiffon-dev/chiffon/api"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
	"github.com/chiffon-dev/chiffon/node/dispatch"
	"github.com/chiffon-dev/chiffon/node/ownerwatch"
	"github.com/chiffon-dev/chiffon/node/telemetry"
	"github.com/chiffon-dev/chiffon/node/worker"
	"github.com/chiffon-dev/chiffon/probe"
	"github.com/chiffon-dev/chiffon/probe/owner"
)

// Errors returned by New for a Config it cannot run.
var (
	// ErrInvalidConfig wraps every validation failure; the message names the
	// setting (as its flag) and what is allowed.
	ErrInvalidConfig = errors.New("invalid configuration")
)

// Bounds of -gossip-nodes and -retransmit-mult: past them a node's gossip
// rounds or queues cost more than any fleet's dissemination gains.
const (
	maxGossipNodes    = 32
	maxRetransmitMult = 16
)

// Sampler is what the node needs from a probe.
type Sampler interface {
	Sample(ctx context.Context) (probe.Sample, error)
}

var _ Sampler = (*probe.Prober)(nil)

// Config configures a node. Flags, CHIFFON_* environment variables and the
// config file all fill this struct (see cmd/chiffon).
type Config struct {
	// NodeName is the serf node name (default: hostname).
	NodeName string
	// DataDir keeps the agent_id, serf's snapshot, keyring, tags and saved
	// peers (serf/), and on orchestrators raft's log and snapshots (raft/).
	DataDir string
	// Roles: "desktop", "orchestrator", or both.
	Roles []string
	// HeartbeatInterval is how often the node samples itself and gossips the
	// result as serf tags (only changed values cause a broadcast).
	HeartbeatInterval time.Duration
	// MetricsFile replaces hardware sampling with a JSON file re-read at
	// every heartbeat.
	MetricsFile string
	// LeaveTimeout bounds the graceful leave on shutdown.
	LeaveTimeout time.Duration

	// Orchestrator holds the raft and liveness settings of orchestrators.
	Orchestrator OrchestratorConfig
	// API holds the HTTP API settings of orchestrators.
	API APIConfig
	// TLS is the cluster TLS material, for every role.
	TLS TLSConfig
	// Work holds the work handler (desktops) and bridge (orchestrators).
	Work WorkConfig
	// Power holds the desktop's sleep and wake-on-LAN settings.
	Power PowerConfig
	// VRAM is a desktop's VRAM policy: the owner's headroom and when a
	// change is gossiped before the heartbeat (vram.go).
	VRAM VRAMConfig
	// Owner is a desktop's owner policy (owner.go).
	Owner OwnerConfig

	// Gossip holds the membership settings (bind, join, encrypt, SWIM
	// timings, RPC). Its Tags, Logger and Handler are filled by the node.
	Gossip gossip.Config

	// Logger is the root logger; Monitor receives serf-style log lines for
	// `serf monitor`.
	Logger  *slog.Logger
	Monitor interface{ SetMonitor(io.Writer) }

	// PushTelemetry: a desktop also sends each tag change straight to the
	// raft leader over the HTTP API (-push-telemetry; node/telemetry).
	PushTelemetry bool

	// Sampler overrides the probe (tests); nil builds one from MetricsFile.
	Sampler Sampler
}

// DefaultConfig returns the settings a desktop gets without flags.
func DefaultConfig() Config {
	return Config{
		Roles:             []string{gossip.RoleDesktop},
		HeartbeatInterval: 30 * time.Second,
		LeaveTimeout:      5 * time.Second,
		Gossip:            gossip.DefaultConfig(),
		Orchestrator:      DefaultOrchestratorConfig(),
		API:               defaultAPIConfig(),
		TLS:               TLSConfig{Domain: tlsutil.DefaultDomain},
		Work:              DefaultWorkConfig(),
		Power:             PowerConfig{WOL: true, Logind: true},
		VRAM:              DefaultVRAMConfig(),
		Owner:             DefaultOwnerConfig(),
		PushTelemetry:     true,
	}
}

// Validate checks c, naming the offending flag and what it allows.
func (c *Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	if len(c.Roles) == 0 {
		return bad("-role: empty; allowed: desktop, orchestrator, or desktop,orchestrator")
	}
	for _, r := range c.Roles {
		if r != gossip.RoleDesktop && r != gossip.RoleOrchestrator {
			return bad("-role: unknown role %q; allowed: desktop, orchestrator, or desktop,orchestrator", r)
		}
	}
	if c.HeartbeatInterval <= 0 {
		return bad("-heartbeat-interval: %s; must be a positive duration such as 30s", c.HeartbeatInterval)
	}
	if c.LeaveTimeout <= 0 {
		return bad("-leave-timeout: %s; must be a positive duration such as 5s", c.LeaveTimeout)
	}
	if c.DataDir == "" {
		return bad("-data-dir: required")
	}
	g := c.Gossip
	for name, d := range map[string]time.Duration{"-retry-interval": g.RetryInterval, "-probe-interval": g.ProbeInterval,
		"-probe-timeout": g.ProbeTimeout, "-gossip-interval": g.GossipInterval} {
		if d < 0 {
			return bad("%s: %s; must not be negative", name, d)
		}
	}
	if g.GossipNodes < 0 || g.GossipNodes > maxGossipNodes {
		return bad("-gossip-nodes: %d; must be from 1 to %d (0: memberlist's 3)", g.GossipNodes, maxGossipNodes)
	}
	if g.RetransmitMult < 0 || g.RetransmitMult > maxRetransmitMult {
		return bad("-retransmit-mult: %d; must be from 1 to %d (0: memberlist's 4)", g.RetransmitMult, maxRetransmitMult)
	}
	for name, addr := range map[string]string{"-bind": g.BindAddr, "-advertise": g.AdvertiseAddr, "-rpc-addr": g.RPCAddr} {
		if err := checkAddr(addr); err != nil {
			return bad("%s: %v", name, err)
		}
	}
	for _, a := range append(slices.Clone(g.Join), g.RetryJoin...) {
		if strings.TrimSpace(a) == "" {
			return bad("-join/-retry-join: empty address")
		}
	}
	if g.RetryMax < 0 {
		return bad("-retry-max: %d; must be 0 (forever) or more", g.RetryMax)
	}
	if g.SuspicionMult < 0 {
		return bad("-suspicion-mult: %d; must be 1 or more", g.SuspicionMult)
	}
	if err := c.Work.validate(); err != nil {
		return err
	}
	if err := c.VRAM.validate(); err != nil {
		return err
	}
	if err := c.TLS.validate(); err != nil {
		return err
	}
	if err := c.Power.validate(); err != nil {
		return err
	}
	if err := c.Owner.validate(); err != nil {
		return err
	}
	if c.Work.Handler != "" && !slices.Contains(c.Roles, gossip.RoleDesktop) {
		return bad("-work-handler: only desktops run work; add -role desktop")
	}
	if slices.Contains(c.Roles, gossip.RoleOrchestrator) {
		if err := c.Orchestrator.validate(); err != nil {
			return err
		}
		if err := c.API.validate(); err != nil {
			return err
		}
	}
	if g.EncryptKey != "" {
		if _, err := gossip.ValidateKey(g.EncryptKey); err != nil {
			return bad("-encrypt: %v", err)
		}
	}
	return nil
}

// checkAddr accepts "" or IP:PORT / host:PORT with a numeric port.
func checkAddr(addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT (e.g. 127.0.0.1:7946)", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	return nil
}

// Node is one running Chiffon node.
type Node struct {
	cfg     Config
	logger  *slog.Logger
	agentID string

	prober  *probe.Prober // nil when cfg.Sampler was given
	sampler Sampler
	gossip  *gossip.Gossip
	store   *consensus.Store // orchestrators only
	// tls is the loaded TLS material (nil without -tls-cert).
	tls *tlsutil.Bundle
	// raftAddr is the advertised raft address (orchestrators).
	raftAddr string
	// api serves HTTP on orchestrators; apiAddr is its advertised address.
	api     *api.Server
	apiAddr string
	// dispatcher is the RabbitMQ bridge the leader runs (orchestrators).
	dispatcher *dispatch.Dispatcher
	// lead owns what this orchestrator does while it leads: the
	// reconciler and the bridge, after one Barrier per term.
	lead *leadership
	// runner, workSrv and workAddr take work on desktops with a handler.
	runner   *worker.Runner
	workSrv  *http.Server
	workAddr string
	// owner watches a desktop's owner (nil with -owner-idle 0);
	// ownerOverride is its state declared by hand.
	owner         *ownerwatch.Watcher
	ownerOverride *owner.Override
	// pubMu serialises building the tags and gossiping them, so that a
	// heartbeat that sampled before an owner change cannot gossip the old
	// owner state after it.
	pubMu sync.Mutex
	// wake nudges the leader loop after gossip events (capacity 1).
	wake chan struct{}
	// reporter pushes a desktop's tags to the leader; overlay holds the
	// pushes an orchestrator took while leading (push.go).
	reporter *telemetry.Reporter
	overlay  *telemetry.Overlay
	// bootProven and bootRefused are the would-be founders checked by
	// maybeBootstrap; only runOrchestrator's goroutine touches them.
	bootProven, bootRefused map[voterKey]bool

	stop      chan struct{}
	wg        sync.WaitGroup
	stopOnce  sync.Once
	closeOnce sync.Once

	mu         sync.Mutex // guards lastErr, lastSample, raftReady, asleep, mac, ownerState and ownerSince
	lastErr    string
	lastSample probe.Sample
	raftReady  bool
	// asleep: the machine said it is about to suspend (power.go).
	asleep bool
	// mac is the MAC address gossiped for wake-on-LAN ("" none).
	mac string
	// ownerState is the owner state gossiped ("" unknown), ownerSince
	// when it began.
	ownerState string
	ownerSince time.Time

	// beatMu serialises sampling-and-gossiping (the heartbeat and the
	// VRAM pushes), so tags never go back to an older sample; it guards
	// gossiped, the sample last gossiped (before the headroom).
	beatMu   sync.Mutex
	gossiped probe.Sample
}

// New validates cfg and returns a node that has opened nothing yet.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Roles = slices.Clone(cfg.Roles)
	return &Node{cfg: cfg, logger: cfg.Logger.With("component", "node"), stop: make(chan struct{}),
		wake: make(chan struct{}, 1), bootProven: map[voterKey]bool{}, bootRefused: map[voterKey]bool{}}, nil
}

// AgentID is the node's persistent identity (valid after Start).
func (n *Node) AgentID() string { return n.agentID }

// Gossip exposes the membership layer (valid after Start).
func (n *Node) Gossip() *gossip.Gossip { return n.gossip }

// LastSample returns the most recent resource sample.
func (n *Node) LastSample() probe.Sample {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lastSample
}

func (n *Node) hasRole(r string) bool { return slices.Contains(n.cfg.Roles, r) }

// Start loads the node's identity, takes a first sample, starts gossip with
// it already in the tags (so peers see the capacity on join), and starts the
// heartbeat loop.
func (n *Node) Start(ctx context.Context) error {
	id, err := consensus.LoadOrCreateNodeID(n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("agent id: %w", err)
	}
	n.agentID = id
	if n.tls, err = n.cfg.TLS.load(); err != nil {
		return err
	}
	n.sampler = n.cfg.Sampler
	if n.sampler == nil && n.hasRole(gossip.RoleDesktop) {
		pc := probe.DefaultConfig()
		pc.MetricsFile = n.cfg.MetricsFile
		pc.Logger = n.cfg.Logger
		p, err := probe.New(pc)
		if err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		n.prober, n.sampler = p, p
	}
	if n.hasRole(gossip.RoleOrchestrator) {
		if err := n.openStore(); err != nil {
			n.closeAll()
			return err
		}
		n.lead = n.newLeadership()
		if err := n.openAPI(); err != nil {
			n.closeAll()
			return err
		}
		if n.dispatcher, err = n.newDispatcher(); err != nil {
			n.closeAll()
			return err
		}
		if err := n.api.Registerer().Register(n.dispatcher.Collector()); err != nil {
			n.closeAll()
			return fmt.Errorf("register work metrics: %w", err)
		}
	}
	if n.cfg.Work.Handler != "" {
		if err := n.openWorker(); err != nil {
			n.closeAll()
			return err
		}
	}
	if err := n.openOwner(ctx); err != nil {
		n.closeAll()
		return err
	}
	info := n.sample(ctx)
	n.gossiped = n.LastSample()
	tags, err := gossip.EncodeTags(nil, info)
	if err != nil {
		n.closeAll()
		return fmt.Errorf("initial tags: %w", err)
	}

	gc := n.cfg.Gossip
	gc.NodeName = n.cfg.NodeName
	gc.DataDir = n.cfg.DataDir
	gc.Tags = tags
	gc.Logger = n.cfg.Logger
	gc.Monitor = n.cfg.Monitor
	gc.Handler = eventWaker{n}
	n.openReporter()
	if n.reporter != nil {
		gc.TagsChanged = n.reporter.Offer
	}
	g, err := gossip.New(gc)
	if err != nil {
		n.closeAll()
		return err
	}
	if n.hasRole(gossip.RoleDesktop) {
		g.HandleLocal(PowerCommand, n.handlePower)
		g.HandleLocal(LocalOwner, n.handleOwnerCommand)
	}
	if err := g.Start(ctx); err != nil {
		n.closeAll()
		return err
	}
	n.pubMu.Lock() // the owner watcher's announcements read it under pubMu
	n.gossip = g
	n.pubMu.Unlock()
	if n.reporter != nil {
		n.reporter.Offer(tags) // the leader hears of a new node at once too
	}
	n.findMAC(ctx)
	if err := n.startAPI(ctx); err != nil {
		n.closeAll()
		return err
	}
	attrs := []any{"agent_id", id, "node", g.Serf().LocalMember().Name, "roles", strings.Join(n.cfg.Roles, ","),
		"gossip", g.Addr(), "rpc", g.RPCAddr(), "heartbeat", n.cfg.HeartbeatInterval}
	if n.raftAddr != "" {
		attrs = append(attrs, "raft", n.raftAddr)
	}
	n.logger.Info("node started", attrs...)
	if n.hasRole(gossip.RoleDesktop) {
		n.wg.Add(1)
		go n.heartbeatLoop()
		if n.cfg.Power.Logind {
			n.wg.Add(1)
			go n.watchLogind()
		}
		if v := n.cfg.VRAM; n.sampler != nil && v.PushDeltaGB > 0 && v.CheckInterval > 0 && v.CheckInterval < n.cfg.HeartbeatInterval {
			n.wg.Add(1)
			go n.vramLoop()
		}
	}
	if n.owner != nil {
		n.owner.Start() // stopped by stopLoops
	}
	if n.store != nil {
		n.wg.Add(2)
		go n.runOrchestrator()
		go func() {
			defer n.wg.Done()
			n.lead.monitorLeadership(n.stop)
		}()
	}
	return nil
}

// Err delivers a fatal background error (for example retry-join gave up).
func (n *Node) Err() <-chan error { return n.gossip.Err() }

// info builds the node's identity tags around a sample, whose free VRAM
// it gives less the owner's headroom (VRAMConfig).
func (n *Node) info(s probe.Sample) gossip.NodeInfo {
	info := gossip.NodeInfo{AgentID: n.agentID, Roles: n.cfg.Roles, APIAddr: n.apiAddr,
		RaftAddr: n.raftAddr, RaftReady: n.isRaftReady(), WorkAddr: n.workAddr, WorkSlots: n.workSlots(),
		Sample: n.cfg.VRAM.withHeadroom(s)}
	if n.store != nil {
		info.RaftCommands = int(consensus.MaxCommandType())
	}
	n.mu.Lock()
	info.Asleep, info.MAC = n.asleep, n.mac
	n.mu.Unlock()
	info.Owner, info.OwnerSince = n.ownerInfo()
	return info
}

// findMAC sets the MAC address a desktop gossips for wake-on-LAN:
// -mac-address, else that of the interface holding the gossip address
// (none on loopback), and gossips it at once.
func (n *Node) findMAC(ctx context.Context) {
	if !n.hasRole(gossip.RoleDesktop) || !n.cfg.Power.WOL {
		return
	}
	mac := n.cfg.Power.MACAddress
	if mac == "" {
		mac = detectMAC(n.gossip.Serf().LocalMember().Addr)
	}
	if mac == "" {
		n.logger.Info("no MAC address for wake-on-LAN on the gossip interface; set -mac-address to be woken",
			"addr", n.gossip.Serf().LocalMember().Addr)
		return
	}
	hw, _ := net.ParseMAC(mac)
	n.mu.Lock()
	n.mac = hw.String()
	n.mu.Unlock()
	_ = n.heartbeat(ctx)
}

// sample takes one sample, logging a failure once per distinct error: the
// probe keeps its last good sample, so a heartbeat always has something.
func (n *Node) sample(ctx context.Context) gossip.NodeInfo {
	if n.sampler == nil {
		return n.info(probe.Sample{})
	}
	s, err := n.sampler.Sample(ctx)
	n.mu.Lock()
	n.lastSample = s
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	changed := msg != n.lastErr
	n.lastErr = msg
	n.mu.Unlock()
	// The probe logs each source's failure once itself; a custom Sampler may
	// not, so report changes here too, once.
	if changed && err != nil {
		n.logger.Warn("sampling resources failed; gossiping the last good sample", "err", err)
	} else if changed {
		n.logger.Info("sampling resources works again")
	}
	return n.info(s)
}

func (n *Node) heartbeatLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.HeartbeatInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-n.stop
		cancel()
	}()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		_ = n.heartbeat(ctx) // logged
	}
}

// Heartbeat samples now and gossips the result if it changed. The loop calls
// it every HeartbeatInterval; power commands and tests call it directly.
func (n *Node) heartbeat(ctx context.Context) error {
	n.beatMu.Lock()
	defer n.beatMu.Unlock()
	info := n.sample(ctx)
	n.pubMu.Lock()
	// The owner state as of now: it may have changed (and been gossiped)
	// while this heartbeat sampled.
	info.Owner, info.OwnerSince = n.ownerInfo()
	changed, err := n.gossip.UpdateInfo(info)
	n.pubMu.Unlock()
	if err != nil {
		n.logger.Error("updating tags failed", "err", err)
		return err
	}
	n.gossiped = n.LastSample()
	if changed {
		n.logger.Debug("heartbeat gossiped new tags", "cpu-cores-available", info.Sample.CPUCoresAvailable,
			"gpu-vram-available-gb", info.Sample.GPUVRAMAvailableGB)
	}
	return nil
}

func (n *Node) closeProber() {
	if n.prober != nil {
		_ = n.prober.Close()
	}
}

func (n *Node) workSlots() int {
	if n.runner == nil {
		return 0
	}
	return n.runner.Slots()
}

// stopLoops ends the heartbeat and orchestrator loops and waits for them.
func (n *Node) stopLoops() {
	n.stopOnce.Do(func() {
		close(n.stop)
		n.wg.Wait()
		// The owner watcher gossips too: it stops with the loops, before a
		// leave.
		n.closeOwner()
	})
}

// closeAll releases what Start opened, in reverse order: API, gossip,
// raft, probe. The loops must have stopped.
func (n *Node) closeAll() error {
	var errs []error
	n.closeOwner() // it steers the runner: it goes first
	errs = append(errs, n.closeWorker())
	n.closeReporter()
	if n.api != nil {
		errs = append(errs, n.api.Close())
	}
	if n.gossip != nil {
		errs = append(errs, n.gossip.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	n.closeProber()
	return errors.Join(errs...)
}

// Leave leaves the cluster gracefully (serf, then for an orchestrator raft,
// each bounded by LeaveTimeout), so peers mark this node left at once
// instead of waiting for failure detection.
func (n *Node) Leave() error {
	if n.gossip == nil {
		return nil
	}
	// Stop the heartbeat and leader loops first: a tag update after serf
	// has begun leaving blocks for serf's broadcast timeout.
	n.stopLoops()
	n.logger.Info("leaving cluster", "timeout", n.cfg.LeaveTimeout)
	err := n.gossip.Leave(n.cfg.LeaveTimeout)
	// An orchestrator also leaves the raft configuration, after serf so
	// that the leader does not add it back as a live voter.
	return errors.Join(err, n.leaveRaft(n.cfg.LeaveTimeout))
}

// Close stops the loops, then the work runner, the API, gossip, raft and
// the probe (roughly the reverse of Start; the runner goes first). It does
// not leave the cluster: call Leave first for a graceful stop.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() {
		n.stopLoops()
		err = n.closeAll()
	})
	return err
}
