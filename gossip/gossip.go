// Package gossip runs a node's membership in the cluster: serf on
// memberlist (SWIM with Lifeguard), Chiffon's compact tag codec, gossip
// encryption with a persisted keyring, join and retry-join, and serf's own
// agent RPC so the stock `serf` CLI works against every node.
package gossip

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/cmd/serf/command/agent"
	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/internal/logging"
)

// Errors returned by this package.
var (
	// ErrNoJoin means -join was given but no address answered.
	ErrNoJoin = errors.New("no join address answered")
	// ErrBadKey means the gossip encryption key is not base64 of 16, 24 or
	// 32 bytes.
	ErrBadKey = errors.New("invalid gossip encryption key")
	// ErrClosed is returned by calls on a closed Gossip.
	ErrClosed = errors.New("gossip is closed")
)

// EventHandler receives serf events (member join/leave/failed/update/reap,
// user events, queries). HandleEvent runs on serf's event loop and must not
// block: copy what you need and hand it to your own goroutine.
type EventHandler interface {
	HandleEvent(serf.Event)
}

// Config configures a Gossip. Zero fields take DefaultConfig's values.
type Config struct {
	// NodeName is the serf node name, unique in the cluster (default: hostname).
	NodeName string
	// DataDir holds serf's snapshot (to rejoin after a restart), the keyring
	// and the tags file, under DataDir/serf. Empty keeps nothing on disk.
	DataDir string
	// BindAddr is the gossip address (host:port, TCP and UDP).
	BindAddr string
	// AdvertiseAddr is the address other nodes use to reach this one.
	AdvertiseAddr string
	// RPCAddr serves serf's agent RPC for the stock serf CLI; "" disables.
	RPCAddr string
	// RPCAuthKey must be presented by RPC clients (serf -rpc-auth). Empty
	// with a DataDir uses the token in DataDir/serf/rpc-auth, created on
	// first start (see LoadOrCreateRPCAuthKey); empty without a DataDir
	// leaves the RPC open to every local user (tests only).
	RPCAuthKey string
	// EncryptKey is a base64 gossip key (16, 24 or 32 bytes). It seeds the
	// keyring file on first start; afterwards the keyring file rules (keys
	// are rotated with `serf keys`).
	EncryptKey string
	// Tags are the node's initial tags (Chiffon's own keys overwrite any
	// stale values restored from the tags file; the operator's keys stay).
	Tags map[string]string
	// Join addresses are contacted at Start; Start fails if none answers.
	Join []string
	// RetryJoin addresses are tried in the background every RetryInterval,
	// at most RetryMax times (0 = forever), until one answers.
	RetryJoin     []string
	RetryInterval time.Duration
	RetryMax      int

	// SWIM timings (memberlist). A silent node is suspected on average
	// 2 × ProbeInterval after it fell silent and declared failed after
	// the suspicion timeout, SuspicionMult × max(1, log10 N) ×
	// ProbeInterval, stretched up to SuspicionMaxTimeoutMult× that while
	// few peers confirm it (Lifeguard). Chiffon's default multiplier is 1
	// (no stretch), so the moment a node fell silent can be worked out
	// from when serf calls it failed (FailureLag); memberlist's own
	// default is 6.
	ProbeInterval           time.Duration
	ProbeTimeout            time.Duration
	GossipInterval          time.Duration
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	// GossipNodes is how many random peers a node sends its queued
	// broadcasts (tag changes, alives, suspicions, serf's intents and
	// queries) to every GossipInterval, and RetransmitMult how many times
	// each broadcast is sent, × ⌈log10(N+1)⌉; 0 keeps memberlist's LAN
	// defaults (3 and 4). Together they set a node's gossip budget: one
	// packet of at most 1,400 bytes per peer per round, ~21 KB/s at the
	// defaults. A fleet whose tag changes need more than that waits in
	// broadcast queues (docs/ARCHITECTURE.md, Scale), as Consul's
	// gossip_lan settings of the same names tune for large clusters.
	GossipNodes    int
	RetransmitMult int
	// PushPullInterval is how often a node syncs its whole member list
	// with a random peer (memberlist's anti-entropy). Besides repairing
	// lost updates, it turns a graceful leave that a node missed — it
	// heard the member go silent before the leave intent reached it, so
	// serf called the member failed — into left.
	PushPullInterval time.Duration
	// DeadNodeReclaimTime is how soon a dead node's name may be claimed from
	// a new address: a desktop that changed Wi-Fi or got a new DHCP lease
	// rejoins under its old name after this long.
	DeadNodeReclaimTime time.Duration
	// LeavePropagateDelay is how long Leave waits for the leave to spread.
	LeavePropagateDelay time.Duration
	// ReconnectTimeout is how long serf keeps trying a failed node before
	// reaping it; TombstoneTimeout how long a left node stays listed.
	ReconnectTimeout time.Duration
	TombstoneTimeout time.Duration
	// GhostWindow is how long after a member was declared failed an alive
	// for it that carries no newer sample is taken for a ghost and refused
	// (ghost.go): a crashed desktop that a node cut off at the time still
	// held alive does not come back when the cut heals.
	GhostWindow time.Duration

	// Transport, if set, carries memberlist's packets and streams instead
	// of real UDP and TCP sockets on BindAddr: `chiffon sim` hands every
	// node a gossip/simnet transport so thousands run in one process.
	// BindAddr and AdvertiseAddr are then not used; the transport's own
	// address is the node's. nil (the default) is the real network.
	Transport memberlist.Transport
	// TuneSerf, if set, edits serf's configuration (and through
	// MemberlistConfig memberlist's) after Chiffon has filled it, just
	// before serf starts. `chiffon sim` scales the timings this package
	// does not expose (memberlist's TCP timeout and gossip-to-the-dead
	// time, serf's reconnect and reap intervals) and turns memberlist's
	// compression off (see the sim package). nil changes nothing.
	TuneSerf func(*serf.Config)

	// Logger receives structured logs; serf's and memberlist's own lines are
	// adapted into it.
	Logger *slog.Logger
	// Monitor, if set, is attached to serf's log buffer so that the stock
	// `serf monitor` streams this node's logs.
	Monitor interface{ SetMonitor(io.Writer) }
	// Handler receives serf events; it must not block.
	Handler EventHandler
	// TagsChanged, if set, is called by UpdateInfo with the node's new
	// tags each time they change, before serf starts gossiping them (its
	// SetTags waits until the update has been sent its full number of
	// times). The node hands them to its telemetry reporter, which sends
	// them straight to the raft leader (node/telemetry). It must not
	// block and must not keep the map past the call without copying it.
	TagsChanged func(tags map[string]string)
}

// DefaultConfig returns memberlist's LAN timings and serf's usual ports.
func DefaultConfig() Config {
	lan := memberlist.DefaultLANConfig()
	return Config{
		BindAddr:                "0.0.0.0:7946",
		RPCAddr:                 "127.0.0.1:7373",
		RetryInterval:           30 * time.Second,
		ProbeInterval:           lan.ProbeInterval,
		ProbeTimeout:            lan.ProbeTimeout,
		GossipInterval:          lan.GossipInterval,
		PushPullInterval:        lan.PushPullInterval,
		SuspicionMult:           lan.SuspicionMult,
		SuspicionMaxTimeoutMult: 1,
		LeavePropagateDelay:     time.Second,
		DeadNodeReclaimTime:     30 * time.Second,
		ReconnectTimeout:        72 * time.Hour,
		TombstoneTimeout:        24 * time.Hour,
		GhostWindow:             30 * time.Minute,
	}
}

// Gossip is a running serf agent plus its RPC endpoint.
type Gossip struct {
	cfg    Config
	logger *slog.Logger

	agent *agent.Agent
	ipc   *agent.AgentIPC
	rpcLn net.Listener
	// rpcAuthFile is set by Start before the RPC listens, then only read.
	rpcAuthFile string
	// savedPeers are the peers the last run saw alive (peers.go),
	// shuffled, when Start found no -join or -retry-join; set by Start
	// before retryJoin runs, then only read.
	savedPeers []string

	tagMu sync.Mutex // serialises read-modify-write of the tag map

	stop chan struct{}
	wg   sync.WaitGroup
	// peersDirty wakes savePeers after a member event (capacity 1).
	peersDirty chan struct{}
	errCh      chan error
	closeOnce  sync.Once
	// closing is set once Close begins (see expectedWarn).
	closing atomic.Bool
	// leaveMu guards starting a leave against Close: a leave that Leave
	// gave up waiting for still runs in serf, and memberlist panics
	// ("leave after shutdown") if Close shuts it down underneath. leaves
	// counts them; Close waits for it after setting closing under
	// leaveMu, so no leave starts once Close waits.
	leaveMu sync.Mutex
	leaves  sync.WaitGroup
	// local holds the node's local commands (local.go).
	local localCommands
}

// ValidateKey checks a base64 gossip key.
func ValidateKey(key string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64: %v", ErrBadKey, err)
	}
	if l := len(b); l != 16 && l != 24 && l != 32 {
		return nil, fmt.Errorf("%w: %d bytes, want 16, 24 or 32 (make one with `chiffon keygen`)", ErrBadKey, l)
	}
	return b, nil
}

// splitHostPort parses host:port with a numeric port.
func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, port, nil
}

// New validates cfg; it opens nothing.
func New(cfg Config) (*Gossip, error) {
	def := DefaultConfig()
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node name: %w", err)
		}
		cfg.NodeName = h
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = def.BindAddr
	}
	setDur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	setDur(&cfg.RetryInterval, def.RetryInterval)
	setDur(&cfg.ProbeInterval, def.ProbeInterval)
	setDur(&cfg.ProbeTimeout, def.ProbeTimeout)
	setDur(&cfg.GossipInterval, def.GossipInterval)
	setDur(&cfg.PushPullInterval, def.PushPullInterval)
	setDur(&cfg.LeavePropagateDelay, def.LeavePropagateDelay)
	setDur(&cfg.DeadNodeReclaimTime, def.DeadNodeReclaimTime)
	setDur(&cfg.ReconnectTimeout, def.ReconnectTimeout)
	setDur(&cfg.TombstoneTimeout, def.TombstoneTimeout)
	setDur(&cfg.GhostWindow, def.GhostWindow)
	if cfg.SuspicionMult == 0 {
		cfg.SuspicionMult = def.SuspicionMult
	}
	if cfg.SuspicionMaxTimeoutMult == 0 {
		cfg.SuspicionMaxTimeoutMult = def.SuspicionMaxTimeoutMult
	}
	if _, _, err := splitHostPort(cfg.BindAddr); err != nil {
		return nil, fmt.Errorf("bind address: %w", err)
	}
	if cfg.AdvertiseAddr != "" {
		if _, _, err := splitHostPort(cfg.AdvertiseAddr); err != nil {
			return nil, fmt.Errorf("advertise address: %w", err)
		}
	}
	if cfg.EncryptKey != "" {
		if _, err := ValidateKey(cfg.EncryptKey); err != nil {
			return nil, err
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Tags = maps.Clone(cfg.Tags)
	return &Gossip{cfg: cfg, logger: cfg.Logger.With("component", "gossip"),
		stop: make(chan struct{}), errCh: make(chan error, 1), peersDirty: make(chan struct{}, 1)}, nil
}

// Start creates the serf agent, serves its RPC, and joins. With Join set it
// returns ErrNoJoin (wrapped) if no address answers.
//
// ctx bounds the start only, as in serf's and Consul's agents: Start returns
// ctx's error, having closed what it started, if ctx is done before it
// begins or between two Join addresses (each address is tried for at most
// memberlist's TCP timeout). Retry-join and everything else that runs in
// the background belong to the Gossip and stop at Close, not with ctx.
func (g *Gossip) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cfg := g.cfg
	sc := serf.DefaultConfig()
	sc.NodeName = cfg.NodeName
	sc.Tags = maps.Clone(cfg.Tags)
	sc.ReconnectTimeout = cfg.ReconnectTimeout
	sc.TombstoneTimeout = cfg.TombstoneTimeout
	sc.LeavePropagateDelay = cfg.LeavePropagateDelay
	sc.RejoinAfterLeave = true // a desktop stopped at night rejoins in the morning
	ml := memberlist.DefaultLANConfig()
	host, port, _ := splitHostPort(cfg.BindAddr)
	ml.BindAddr, ml.BindPort = host, port
	if cfg.AdvertiseAddr != "" {
		ml.AdvertiseAddr, ml.AdvertisePort, _ = splitHostPort(cfg.AdvertiseAddr)
	}
	ml.ProbeInterval = cfg.ProbeInterval
	ml.ProbeTimeout = cfg.ProbeTimeout
	ml.GossipInterval = cfg.GossipInterval
	ml.PushPullInterval = cfg.PushPullInterval
	ml.SuspicionMult = cfg.SuspicionMult
	ml.SuspicionMaxTimeoutMult = cfg.SuspicionMaxTimeoutMult
	if cfg.GossipNodes > 0 {
		ml.GossipNodes = cfg.GossipNodes
	}
	if cfg.RetransmitMult > 0 {
		ml.RetransmitMult = cfg.RetransmitMult
	}
	ml.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	ml.Transport = cfg.Transport
	ghosts := newGhostGuard(cfg.GhostWindow, 0)
	ml.Alive = ghosts // serf sets its own only with a Merge delegate, which Chiffon has not
	sc.MemberlistConfig = ml

	rpcAuth := cfg.RPCAuthKey
	if cfg.RPCAddr != "" {
		switch {
		case rpcAuth != "":
			g.logger.Info("serf RPC requires the -rpc-auth token")
		case cfg.DataDir != "":
			key, created, err := LoadOrCreateRPCAuthKey(cfg.DataDir)
			if err != nil {
				return err
			}
			rpcAuth, g.rpcAuthFile = key, RPCAuthPath(cfg.DataDir)
			g.logger.Info("serf RPC requires the token in the data dir (serf -rpc-auth)", "file", g.rpcAuthFile, "created", created)
		default:
			g.logger.Warn("serf RPC has no auth token: any local user can read the gossip key and set tags")
		}
	}

	ac := agent.DefaultConfig()
	if cfg.DataDir != "" {
		dir := filepath.Join(cfg.DataDir, "serf")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create serf dir: %w", err)
		}
		sc.SnapshotPath = filepath.Join(dir, "local.snapshot")
		sc.KeyringFile = KeyringFile(cfg.DataDir)
		ac.TagsFile = filepath.Join(dir, "tags.json")
		if err := g.prepareKeyring(sc.KeyringFile); err != nil {
			return err
		}
		if _, err := os.Stat(sc.KeyringFile); err == nil {
			ac.KeyringFile = sc.KeyringFile
		}
	} else if cfg.EncryptKey != "" {
		key, _ := ValidateKey(cfg.EncryptKey)
		kr, err := memberlist.NewKeyring(nil, key)
		if err != nil {
			return fmt.Errorf("keyring: %w", err)
		}
		ml.Keyring = kr
	}

	if cfg.TuneSerf != nil {
		cfg.TuneSerf(sc)
	}
	ghosts.forgetAfter = sc.MemberlistConfig.GossipToTheDeadTime
	logw := logging.StdWriterExpecting(g.cfg.Logger, g.expectedWarn, "agent", "agent.ipc")
	var own *CompactTransport // UDP/TCP as memberlist's own, each packet in a buffer of its size (transport.go)
	if mc := sc.MemberlistConfig; mc.Transport == nil {
		var err error
		own, err = NewCompactTransport(mc.BindAddr, mc.BindPort, log.New(logw, "", log.LstdFlags))
		if err != nil {
			return err
		}
		if mc.BindPort == 0 { // as memberlist does with the port it binds
			mc.BindPort = own.GetAutoBindPort()
			mc.AdvertisePort = mc.BindPort
		}
		mc.Transport = own
	}
	a, err := agent.Create(ac, sc, logw)
	if err != nil {
		if own != nil {
			_ = own.Shutdown()
		}
		return fmt.Errorf("create serf agent: %w", err)
	}
	// The tags file restores the operator's tags, but also our own from the
	// last run, which may be stale (a new API address, say): ours win.
	live := a.SerfConfig().Tags
	if live == nil {
		live = map[string]string{}
		a.SerfConfig().Tags = live
	}
	maps.DeleteFunc(live, func(k, _ string) bool { return IsOwnedTag(k) })
	maps.Copy(live, cfg.Tags)
	a.RegisterEventHandler(&eventLogger{g: g})
	a.RegisterEventHandler(ghosts)
	a.RegisterEventHandler(localDispatcher{g: g})
	if cfg.Handler != nil {
		a.RegisterEventHandler(cfg.Handler)
	}
	if err := a.Start(); err != nil {
		if own != nil {
			_ = own.Shutdown()
		}
		return fmt.Errorf("start serf: %w", err)
	}
	g.agent = a
	local := a.Serf().LocalMember()
	g.logger.Info("gossip started", "node", local.Name, "addr", net.JoinHostPort(local.Addr.String(), strconv.Itoa(int(local.Port))),
		"encrypted", a.Serf().EncryptionEnabled())

	if cfg.RPCAddr != "" {
		ln, err := net.Listen("tcp", cfg.RPCAddr)
		if err != nil {
			g.Close()
			return fmt.Errorf("listen for serf RPC on %s: %w", cfg.RPCAddr, err)
		}
		g.rpcLn = ln
		lw := agent.NewLogWriter(512)
		if cfg.Monitor != nil {
			cfg.Monitor.SetMonitor(lw)
		}
		g.ipc = agent.NewAgentIPC(a, rpcAuth, ln, logging.StdWriter(g.cfg.Logger, "agent", "agent.ipc"), lw, false)
		g.logger.Info("serf RPC listening", "addr", ln.Addr().String())
	}

	if len(cfg.Join) > 0 {
		// One address at a time, as memberlist would try them, so that ctx
		// is checked between them.
		n, errs := 0, []error(nil)
		for _, addr := range cfg.Join {
			if err := ctx.Err(); err != nil {
				g.Close()
				return fmt.Errorf("join %v: %w", cfg.Join, err)
			}
			k, err := a.Join([]string{addr}, false)
			n += k
			errs = append(errs, err)
		}
		if n == 0 {
			g.Close()
			return fmt.Errorf("%w: tried %v: %v", ErrNoJoin, cfg.Join, errors.Join(errs...))
		}
		g.logger.Info("joined cluster", "contacted", n, "addrs", cfg.Join)
	}
	if testHookBeforeRejoin != nil {
		testHookBeforeRejoin(g)
	}
	if len(cfg.Join) == 0 && len(cfg.RetryJoin) == 0 && cfg.DataDir != "" {
		// No flags: join the peers the last run saw alive (see peers.go),
		// in the background like -retry-join. Also when this node already
		// knows members: after a kill -9, serf's snapshot may hold only
		// the node itself, and gossip from members that still count it
		// dead (memberlist gossips to the dead for 30 s) can teach it
		// members before this point. Knowing them is not being known by
		// them: without a join, they see it alive only when serf's
		// reconnect or a push-pull finds it, 30 s intervals by default.
		// Where serf's snapshot did rejoin, this is a few more push-pulls.
		if peers := g.loadPeers(); len(peers) > 0 {
			g.logger.Info("rejoining peers saved by the last run", "peers", len(peers))
			rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
			g.savedPeers = peers
		}
	}
	if len(g.cfg.RetryJoin) > 0 || len(g.savedPeers) > 0 {
		g.wg.Add(1)
		go g.retryJoin()
	}
	if cfg.DataDir != "" {
		g.wg.Add(1)
		go g.savePeers()
	}
	return nil
}

// prepareKeyring writes the -encrypt key into a new keyring file, or warns
// when an existing keyring does not hold it.
func (g *Gossip) prepareKeyring(path string) error {
	if g.cfg.EncryptKey == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b, _ := json.Marshal([]string{g.cfg.EncryptKey})
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return fmt.Errorf("write keyring: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read keyring: %w", err)
	}
	var keys []string
	if err := json.Unmarshal(data, &keys); err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	if !slices.Contains(keys, g.cfg.EncryptKey) {
		g.logger.Warn("ignoring -encrypt: the keyring in the data dir does not hold that key; rotate keys with `serf keys`",
			"keyring", path)
	}
	return nil
}

// retryAddrs is what retry-join attempt number attempt (from 1) contacts:
// every -retry-join address, as memberlist's Join does; without them,
// the next rejoinMembers of the saved peers (shuffled once, taken in
// turn), since each contact is a full state exchange and the saved list
// holds every member the last run saw alive.
func (g *Gossip) retryAddrs(attempt int) []string {
	if len(g.cfg.RetryJoin) > 0 {
		return g.cfg.RetryJoin
	}
	n := min(rejoinMembers, len(g.savedPeers))
	out := make([]string, n)
	for i := range out {
		out[i] = g.savedPeers[((attempt-1)*n+i)%len(g.savedPeers)]
	}
	return out
}

// testHookBeforeRejoin, when set by a test, runs in Start just before the
// node decides how to rejoin after a restart.
var testHookBeforeRejoin func(*Gossip)

func (g *Gossip) retryJoin() {
	defer g.wg.Done()
	for attempt := 1; ; attempt++ {
		addrs := g.retryAddrs(attempt)
		n, err := g.agent.Join(addrs, false)
		if n > 0 {
			g.logger.Info("retry-join succeeded", "contacted", n, "attempt", attempt)
			return
		}
		g.logger.Warn("retry-join failed", "attempt", attempt, "addrs", addrs, "err", err)
		if g.cfg.RetryMax > 0 && attempt >= g.cfg.RetryMax {
			err := fmt.Errorf("%w: retry-join gave up after %d attempts: %v", ErrNoJoin, attempt, err)
			g.logger.Error("retry-join giving up", "attempts", attempt)
			select {
			case g.errCh <- err:
			default:
			}
			return
		}
		select {
		case <-g.stop:
			return
		case <-time.After(g.cfg.RetryInterval):
		}
	}
}

// Err delivers a fatal background error (retry-join exhausted).
func (g *Gossip) Err() <-chan error { return g.errCh }

// Serf exposes the running serf instance (for members and events).
func (g *Gossip) Serf() *serf.Serf { return g.agent.Serf() }

// RPCAuthFile is the file holding the serf RPC's token when it came from
// the data dir; "" when the token came from Config.RPCAuthKey or there is
// none.
func (g *Gossip) RPCAuthFile() string { return g.rpcAuthFile }

// RPCAddr is the address the serf RPC listens on; "" when it is off.
func (g *Gossip) RPCAddr() string {
	if g.rpcLn == nil {
		return ""
	}
	return g.rpcLn.Addr().String()
}

// Addr is this node's gossip address as others see it.
func (g *Gossip) Addr() string {
	m := g.agent.Serf().LocalMember()
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
}

// FailureLag is how long after a node falls silent serf reports it failed,
// on average: the wait for the first probe of the silent node, then the
// probe itself, then memberlist's suspicion timeout.
//
//   - First probe: every other member probes one member per ProbeInterval,
//     round robin over a shuffled list, so the probes of any one node
//     arrive about once per interval, from many members at random phases:
//     close to a Poisson stream, whose mean wait is one interval. (Fewer
//     probers wait less on average, and at most ~3 intervals in a 3-node
//     cluster.)
//   - The probe: a failed probe concludes (direct, indirect and TCP pings
//     all unanswered) one ProbeInterval after it started.
//   - Suspicion: SuspicionMult × max(1, log10 N) × ProbeInterval for the
//     current cluster size N, exact when SuspicionMaxTimeoutMult is 1
//     (Chiffon's default); with Lifeguard's stretch enabled the real lag may
//     be up to that multiple longer.
//
// The leader anchors the 90 s offline clock this far back; only the first
// part is random, so "offline 90 s after it fell silent" holds to within
// about two probe intervals either way.
func (g *Gossip) FailureLag() time.Duration {
	n := float64(g.agent.Serf().Memberlist().NumMembers())
	scale := math.Max(1, math.Log10(math.Max(1, n)))
	suspicion := time.Duration(float64(g.cfg.SuspicionMult) * scale * float64(g.cfg.ProbeInterval))
	return 2*g.cfg.ProbeInterval + suspicion
}

// Tags returns a copy of the node's current tags.
func (g *Gossip) Tags() map[string]string {
	g.tagMu.Lock()
	defer g.tagMu.Unlock()
	return maps.Clone(g.agent.SerfConfig().Tags)
}

// UpdateInfo encodes info into the node's tags, keeping the operator's own
// keys, and gossips them if anything changed. It reports whether it did.
// It waits, at most serf's BroadcastTimeout, for the update's broadcast to
// finish; one still queued then is not an error (it goes out).
func (g *Gossip) UpdateInfo(info NodeInfo) (bool, error) {
	g.tagMu.Lock()
	defer g.tagMu.Unlock()
	if g.agent == nil {
		return false, ErrClosed
	}
	cur := g.agent.SerfConfig().Tags
	next, err := EncodeTags(cur, info)
	if err != nil {
		return false, err
	}
	if maps.Equal(cur, next) {
		return false, nil
	}
	// serf's tags RPC (`serf tags -set`) does its own read-modify-write of
	// the same map without our lock. Re-check just before writing so an
	// operator's change made while we encoded is merged, not lost. (A window
	// of microseconds remains; closing it needs a lock inside serf.)
	if live := g.agent.SerfConfig().Tags; !maps.Equal(live, cur) {
		if next, err = EncodeTags(live, info); err != nil {
			return false, err
		}
	}
	if g.cfg.TagsChanged != nil {
		g.cfg.TagsChanged(next)
	}
	if err := g.agent.SetTags(next); err != nil {
		if strings.Contains(err.Error(), updateBroadcastTimeout) {
			// The tags are set and their broadcast is queued; it has not
			// finished its retransmissions within serf's BroadcastTimeout
			// because the broadcast queue is long (a large fleet's tag
			// updates; docs/PERFORMANCE.md). They still go out.
			g.logger.Debug("tag update queued behind other broadcasts", "err", err)
			return true, nil
		}
		return false, fmt.Errorf("set tags: %w", err)
	}
	return true, nil
}

// updateBroadcastTimeout is memberlist's error (it has no sentinel) when
// UpdateNode has set and queued the node's new state but the broadcast
// has not been sent its full number of times within the timeout.
const updateBroadcastTimeout = "timeout waiting for update broadcast"

// Leave leaves the cluster gracefully, waiting at most timeout. A leave
// that takes longer goes on in the background (serf waits for its leave
// broadcast, memberlist's, then LeavePropagateDelay), and Close waits for
// it.
func (g *Gossip) Leave(timeout time.Duration) error {
	if g.agent == nil {
		return nil
	}
	g.leaveMu.Lock()
	if g.closing.Load() {
		g.leaveMu.Unlock()
		return ErrClosed
	}
	g.leaves.Add(1)
	g.leaveMu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer g.leaves.Done()
		done <- g.agent.Leave()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("leave: no confirmation within %s", timeout)
	}
}

// Close stops the RPC server, retry-join and serf. It does not leave: call
// Leave first for a graceful stop. A leave still running (Leave timed out)
// is waited for first, at most serf's broadcast timeout twice plus
// LeavePropagateDelay. Safe to call more than once.
func (g *Gossip) Close() error {
	var err error
	g.closeOnce.Do(func() {
		close(g.stop)
		g.leaveMu.Lock()
		g.closing.Store(true)
		g.leaveMu.Unlock()
		g.leaves.Wait()
		if g.ipc != nil {
			g.ipc.Shutdown()
		}
		if g.cfg.Monitor != nil {
			g.cfg.Monitor.SetMonitor(nil)
		}
		if g.agent != nil {
			err = g.agent.Shutdown()
		}
		g.wg.Wait()
	})
	return err
}

// expectedWarn reports serf's WARN lines that Close always causes, logged
// at INFO so that a clean stop does not look like trouble: serf shutting
// down ("Shutdown without a Leave": Node.Leave, before Close, logs whether
// the graceful leave failed; and chiffon dev's leader closes without one on
// purpose), and the agent noticing it ("Serf shutdown detected, quitting").
// Before Close they stay warnings.
func (g *Gossip) expectedWarn(lib, msg string) bool {
	if !g.closing.Load() {
		return false
	}
	return lib == "serf" && msg == "Shutdown without a Leave" ||
		lib == "agent" && msg == "Serf shutdown detected, quitting"
}

// eventLogger logs membership changes: state changes, not every update.
type eventLogger struct{ g *Gossip }

func (e *eventLogger) HandleEvent(ev serf.Event) {
	me, ok := ev.(serf.MemberEvent)
	if !ok || me.Type == serf.EventMemberUpdate {
		return
	}
	e.g.peersChanged()
	for _, m := range me.Members {
		e.g.logger.Info("member "+me.Type.String(), "member", m.Name, "addr", m.Addr.String(), "status", m.Status.String())
	}
}

// KeyringFile is where a node with data dir dataDir keeps its gossip
// keyring: the keys -encrypt seeded and `serf keys` rotated since.
func KeyringFile(dataDir string) string { return filepath.Join(dataDir, "serf", "keyring") }

// rejoinMembers is how many known members Rejoin contacts, and how many
// saved peers a retry-join attempt does.
const rejoinMembers = 3

// Rejoin contacts a few of the members this node knows (alive or not, but
// not left) and the -join/-retry-join addresses (or, without those, a few
// saved peers), to exchange full state at once: a node that wakes from
// suspend learns that the others declared it dead and refutes it with a
// new incarnation, instead of waiting for the next push-pull or serf's
// reconnect. It returns how many answered.
func (g *Gossip) Rejoin() (int, error) {
	if g.agent == nil {
		return 0, ErrClosed
	}
	s := g.agent.Serf()
	self := s.LocalMember().Name
	var addrs []string
	for _, m := range s.Members() {
		if m.Name == self || m.Status == serf.StatusLeft || m.Status == serf.StatusLeaving {
			continue
		}
		addrs = append(addrs, net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))))
	}
	// A few members suffice (each is a full state exchange); in a large
	// pool, contacting every one would be a burst at every wake.
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	addrs = addrs[:min(len(addrs), rejoinMembers)]
	addrs = append(addrs, g.cfg.Join...)
	addrs = append(addrs, g.retryAddrs(1)...) // -retry-join, or a few saved peers
	if len(addrs) == 0 {
		return 0, nil
	}
	return g.agent.Join(addrs, true)
}
