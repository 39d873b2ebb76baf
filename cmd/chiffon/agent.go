package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/logging"
	"github.com/chiffon-dev/chiffon/internal/memtrim"
	"github.com/chiffon-dev/chiffon/node"
)

// agentCommand runs a node until SIGINT or SIGTERM, then leaves gracefully.
type agentCommand struct {
	ui cli.Ui
	// ready, when set (tests), receives the node once it has started.
	ready func(*node.Node)
	// tune, when set (the hidden sim-orchestrator command), edits the
	// configuration the flags built before it is validated.
	tune func(*node.Config)
}

// defaultTrimAfter is -trim-startup-pages' default: long enough for the
// node to have joined and sampled once, short enough that a desktop's
// resident set is its working set within its first minute.
const defaultTrimAfter = 10 * time.Second

// agentSettings is everything the agent command reads from flags, env and
// the config file, before it becomes a node.Config.
type agentSettings struct {
	cfg        node.Config
	logLevel   string
	logJSON    bool
	roles      []string
	configFile string
	// insecure lets an orchestrator start without a gossip key and TLS
	// material (secure.go).
	insecure bool
	// trimAfter is how long after start the agent drops the executable
	// pages start-up touched (internal/memtrim); 0 never.
	trimAfter time.Duration
}

func defaultDataDir() string {
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".chiffon")
	}
	return "chiffon-data"
}

func (s *agentSettings) options() *options {
	s.cfg = node.DefaultConfig()
	s.cfg.DataDir = defaultDataDir()
	s.roles = []string{"desktop"}
	s.logLevel = "info"
	s.trimAfter = defaultTrimAfter
	c := &s.cfg
	g := &c.Gossip
	o := &options{}
	o.str(&c.NodeName, "node", "node name, unique in the cluster (default: hostname)")
	o.str(&c.DataDir, "data-dir", "directory for the agent_id, serf snapshot, keyring and tags")
	o.str(&g.BindAddr, "bind", "gossip address to bind, IP:PORT (TCP and UDP)")
	o.str(&g.AdvertiseAddr, "advertise", "gossip address other nodes should use, IP:PORT")
	o.strList(&g.Join, "join", "address of a cluster member to join at start; fails if none answers")
	o.strList(&g.RetryJoin, "retry-join", "address to join, retried in the background until it answers")
	o.duration(&g.RetryInterval, "retry-interval", "time between retry-join attempts")
	o.integer(&g.RetryMax, "retry-max", "retry-join attempts before giving up (0 = forever)")
	o.str(&g.RPCAddr, "rpc-addr", "serf agent RPC address for the serf CLI and 'chiffon members'")
	o.str(&g.RPCAuthKey, "rpc-auth", "token serf RPC clients must present (serf -rpc-auth); default: a random one kept in <data-dir>/serf/rpc-auth (mode 0600)")
	o.strList(&s.roles, "role", "node role: desktop, orchestrator, or desktop,orchestrator")
	o.duration(&c.HeartbeatInterval, "heartbeat-interval", "how often to sample resources and gossip them as tags")
	o.str(&c.MetricsFile, "metrics-file", "read resources from this JSON file at each heartbeat instead of the hardware")
	o.gigabytes(&c.VRAM.HeadroomGB, "owner-vram-headroom-gb", "desktops: VRAM on each GPU always left free for the owner; the desktop gossips its free VRAM less this")
	o.gigabytes(&c.VRAM.PushDeltaGB, "push-vram-delta-gb", "desktops: gossip at once (checked every second, rate-limited) when a GPU's free VRAM moves by this much or a GPU goes busy or idle; 0: wait for the heartbeat")
	o.boolean(&c.PushTelemetry, "push-telemetry", "desktops: also send each tag change straight to the raft leader over the orchestrators' HTTP API (authenticated by -tls-ca client certificates or -http-token), so the registry need not wait for gossip to spread it; false: gossip only")
	o.str(&g.EncryptKey, "encrypt", "gossip encryption key, base64 (see 'chiffon keygen'); seeds the keyring in the data dir")
	o.duration(&g.ProbeInterval, "probe-interval", "SWIM: time between failure-detection probes")
	o.duration(&g.ProbeTimeout, "probe-timeout", "SWIM: time to wait for a probe's ack")
	o.duration(&g.GossipInterval, "gossip-interval", "SWIM: time between gossip rounds")
	o.integer(&g.SuspicionMult, "suspicion-mult", "SWIM: suspicion timeout multiplier (× log10 N × probe interval)")
	o.integer(&g.GossipNodes, "gossip-nodes", "SWIM: peers each gossip round sends queued broadcasts (tag changes) to (0: memberlist's 3); more for fleets of hundreds of desktops, see docs/ARCHITECTURE.md (Scale)")
	o.integer(&g.RetransmitMult, "retransmit-mult", "SWIM: times each broadcast is sent, × log10(N+1) (0: memberlist's 4)")
	oc := &c.Orchestrator
	o.str(&oc.RaftAddr, "raft-addr", "orchestrators: raft address to bind, IP:PORT")
	o.str(&oc.RaftAdvertise, "raft-advertise", "orchestrators: raft address other orchestrators dial (default: -raft-addr)")
	o.integer(&oc.BootstrapExpect, "bootstrap-expect", "orchestrators: found a raft cluster once this many orchestrators are in the pool (0: join an existing one)")
	o.duration(&oc.Liveness.SuspicionTimeout, "suspicion-timeout", "silence after which a suspect node is offline, from when it was last known alive")
	o.duration(&oc.Liveness.ReapAfter, "reap-after", "how long offline and left nodes stay listed")
	o.duration(&oc.Liveness.DeadServerAfter, "dead-server-after", "how long a failed orchestrator stays a raft voter")
	o.duration(&oc.Liveness.FlapHalfLife, "flap-half-life", "orchestrators: a node's flap score (+1 each time it comes back online after going silent; placement prefers low scores) halves every this long")
	o.duration(&oc.Liveness.VoterRoleGrace, "voter-role-grace", "how long a raft voter that gossip no longer calls an orchestrator (or no longer lists) stays one; it is logged at once")
	o.duration(&oc.RaftHeartbeatTimeout, "raft-heartbeat-timeout", "raft: follower's wait for the leader before an election")
	o.duration(&oc.RaftElectionTimeout, "raft-election-timeout", "raft: candidate's wait in an election")
	o.duration(&oc.RaftLeaseTimeout, "raft-lease-timeout", "raft: leader's lease without contact with a quorum")
	o.boolean(&oc.RaftPreVote, "raft-prevote", "raft: ask whether an election could be won before raising the term (false: raft before v1.7)")
	ap := &c.API
	o.str(&ap.HTTPAddr, "http-addr", "orchestrators: HTTP API address, IP:PORT")
	o.str(&ap.Token, "http-token", "orchestrators: token every HTTP request must carry (Bearer or X-Chiffon-Token)")
	o.integer(&ap.ReadyMaxLag, "ready-max-lag", "orchestrators: GET /readyz fails when more committed raft entries than this are not applied here")
	o.duration(&ap.ReadyMaxStale, "ready-max-stale", "orchestrators: GET /readyz fails on a follower that has not kept up with the leader for longer than this")
	tc := &c.TLS
	o.str(&tc.CertFile, "tls-cert", "this node's certificate (PEM, 'chiffon tls cert create'); orchestrators serve HTTPS with it")
	o.str(&tc.KeyFile, "tls-key", "private key for -tls-cert (PEM)")
	o.str(&tc.Domain, "tls-domain", "domain of the cluster's certificate names (as given to 'chiffon tls ca create')")
	o.boolean(&ap.EnableDebug, "enable-debug", "orchestrators: serve Go's profiler at /debug/pprof/ on the HTTP API (behind -http-token)")
	o.str(&tc.CAFile, "tls-ca", "the cluster CA (PEM): peers must hold certificates signed by it; orchestrators require client certificates")
	o.boolean(&s.insecure, "insecure", "let an orchestrator start without a gossip key (-encrypt) and TLS material (-tls-ca, -tls-cert, -tls-key); warned about at every start")
	wk := &c.Work
	o.str(&wk.Handler, "work-handler", "desktops: command run for each work item (sh -c), payload on stdin; empty takes no work")
	o.str(&wk.HandlerMode, "work-handler-mode", "desktops: exec (a process per work item) or persistent (long-lived handlers, one JSON line in and out per item; see docs/API.md)")
	o.str(&wk.Addr, "work-addr", "desktops: address to take work assignments on, IP:PORT; empty: the -bind IP, port 7380 (advertised as -advertise, or for 0.0.0.0 a private IP)")
	o.integer(&wk.Concurrency, "work-concurrency", "desktops: work items run at once")
	o.duration(&wk.Timeout, "work-timeout", "desktops: a work item running longer is killed and failed")
	ow := &c.Owner
	o.duration(&ow.Idle, "owner-idle", "desktops: take work only once the owner has been idle this long (0: ignore the owner; see docs/OPERATIONS.md)")
	o.str(&ow.Action, "owner-action", "desktops: what running work does when the owner comes back: suspend (SIGSTOP until idle again), requeue (stop it, hand the item back; the attempt is not counted) or finish (let it end)")
	o.strList(&ow.Sources, "owner-sources", "desktops: how to tell the owner is at the keyboard, in order: logind (a graphical session's IdleHint), input (/dev/input access times), tty (terminal access times; counts ssh sessions too)")
	o.str(&wk.Bridge.AMQPURL, "amqp-url", "orchestrators: RabbitMQ URL of the work bridge (amqp://user:pass@host:5672); empty: no bridge")
	o.str(&wk.Bridge.WorkQueue, "amqp-work-queue", "orchestrators: queue work requests arrive on")
	o.duration(&wk.Bridge.PendingTimeout, "work-pending-timeout", "orchestrators: how long a request may wait for capacity before it fails with \"no capacity\"")
	o.integer(&wk.Bridge.MaxAttempts, "work-max-attempts", "orchestrators: placements of one item before it fails (its node went offline)")
	o.duration(&wk.Bridge.Retention, "work-retention", "orchestrators: how long a published result stays in the registry (its work_id is a duplicate meanwhile)")
	o.integer(&wk.Bridge.RetentionMax, "work-retention-max", "orchestrators: most published results kept, oldest forgotten first (0: no cap)")
	o.duration(&wk.Bridge.Lease, "work-lease", "orchestrators: how long after its assignment a desktop may still start a work item; a late one is placed again after twice this (desktop clocks must agree within it)")
	o.duration(&wk.Bridge.UnreachableAfter, "work-unreachable-after", "orchestrators: a desktop whose work endpoint the leader cannot reach for this long is marked unreachable and its work placed elsewhere, whatever gossip says")
	o.boolean(&c.Power.WOL, "wol", "desktops: gossip the MAC address of the gossip interface so the leader can wake this machine with wake-on-LAN (false: never woken)")
	o.boolean(&c.Power.Logind, "logind-sleep", "desktops: announce a suspend on logind's PrepareForSleep (holding a delay inhibitor lock), as the sleep hook does; without logind this is logged once")
	o.str(&c.Power.MACAddress, "mac-address", "desktops: MAC address to gossip for wake-on-LAN instead of the gossip interface's")
	o.str(&wk.Bridge.Wake.Broadcast, "wol-broadcast", "orchestrators: UDP address the leader sends wake-on-LAN packets to, for work that fits only an asleep desktop (empty: never wake)")
	o.duration(&wk.Bridge.Wake.Timeout, "wol-timeout", "orchestrators: how long the leader waits for a woken desktop (the work waits for it; no second packet to it meanwhile)")
	o.integer(&wk.Bridge.Wake.MaxPerMinute, "wol-max-per-minute", "orchestrators: desktops woken in the whole cluster in any minute, at most (0: never wake)")
	o.duration(&c.LeaveTimeout, "leave-timeout", "bound on the graceful leave at SIGINT/SIGTERM")
	o.str(&s.logLevel, "log-level", "log level: debug, info, warn or error")
	o.boolean(&s.logJSON, "log-json", "log as JSON lines")
	o.duration(&s.trimAfter, "trim-startup-pages", "drop the executable's pages that start-up touched from memory this long after start, once (they fault back in when used; 0: keep them)")
	o.str(&s.configFile, "config-file", "JSON config file; keys are flag names (flags > env > file)")
	return o
}

func (c *agentCommand) Synopsis() string { return "Run a Chiffon node (desktop and/or orchestrator)" }

func (c *agentCommand) Help() string {
	var s agentSettings
	return `Usage: chiffon agent [options]

  Runs a Chiffon node. A desktop samples its CPU, memory and GPUs and gossips
  them as serf tags every heartbeat. Join a cluster with -join or -retry-join
  and a seed address; a restarted node rejoins from its data dir on its own.
  SIGINT or SIGTERM leaves the cluster gracefully and exits 0.

  Every flag may also be set as CHIFFON_<FLAG> (e.g. CHIFFON_HEARTBEAT_INTERVAL)
  or as a key of the -config-file JSON object. Flags take one dash or two.

Options:

` + s.options().help()
}

// Run parses the settings, starts the node and waits for a signal.
func (c *agentCommand) Run(args []string) int {
	var s agentSettings
	o := s.options()
	rest, err := o.parse("agent", args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		c.ui.Error("chiffon agent: " + strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	}
	if len(rest) > 0 {
		c.ui.Error(fmt.Sprintf("chiffon agent: unexpected arguments %q; flags go before any argument", rest))
		return 2
	}
	level, err := logging.ParseLevel(s.logLevel)
	if err != nil {
		c.ui.Error("chiffon agent: -log-level: " + err.Error())
		return 2
	}
	logger, tee := logging.New(os.Stderr, level, s.logJSON)
	s.cfg.Roles = s.roles
	s.cfg.Logger = logger
	s.cfg.Monitor = tee
	if c.tune != nil {
		c.tune(&s.cfg)
	}
	if err := s.cfg.Validate(); err != nil {
		c.ui.Error("chiffon agent: " + strings.TrimPrefix(err.Error(), node.ErrInvalidConfig.Error()+": "))
		return 2
	}
	if open := s.unprotected(); len(open) > 0 {
		if slices.Contains(s.roles, gossip.RoleOrchestrator) && !s.insecure {
			c.ui.Error(s.refusal(open))
			return 2
		}
		// Every start, so that an insecure node is never forgotten.
		logger.Warn("running without protection", "insecure", s.insecure, "unprotected", strings.Join(open, "; "))
	}
	n, err := node.New(s.cfg)
	if err != nil {
		c.ui.Error("chiffon agent: " + err.Error())
		return 2
	}

	sigCh := make(chan os.Signal, 2)
	signal.Notify(sigCh, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigCh)

	ctx := context.Background()
	if err := n.Start(ctx); err != nil {
		logger.Error("start failed", "err", err)
		_ = n.Close()
		return 1
	}
	if c.ready != nil {
		c.ready(n)
	}
	// Start-up touched code and tables all over the binary that an idle
	// node does not run again; once it has settled, drop them (memtrim).
	var trim <-chan time.Time
	if s.trimAfter > 0 {
		t := time.NewTimer(s.trimAfter)
		defer t.Stop()
		trim = t.C
	}
	code := 0
loop:
	for {
		select {
		case <-trim:
			trim = nil
			switch n, err := memtrim.Executable(); {
			case errors.Is(err, memtrim.ErrUnsupported):
				logger.Debug("start-up pages kept", "err", err)
			case err != nil:
				logger.Warn("trim start-up pages", "err", err)
			default:
				logger.Info("trimmed start-up pages", "executable_mapped_bytes", n)
			}
		case sig := <-sigCh:
			logger.Info("caught signal, leaving cluster", "signal", sig.String())
			// A second signal stops waiting for the graceful leave. Close
			// still lets serf's leave, if under way, finish (at most twice
			// serf's 5 s broadcast timeout, plus 1 s to propagate):
			// memberlist panics when shut down under it.
			done := make(chan error, 1)
			go func() { done <- n.Leave() }()
			select {
			case err := <-done:
				if err != nil {
					logger.Warn("graceful leave incomplete", "err", err)
				}
			case <-sigCh:
				logger.Warn("second signal: stopping without waiting for the leave")
			case <-time.After(s.cfg.LeaveTimeout + time.Second):
			}
			break loop
		case err := <-n.Err():
			logger.Error("stopping", "err", err)
			code = 1
			break loop
		}
	}
	if err := n.Close(); err != nil {
		logger.Warn("shutdown", "err", err)
	}
	logger.Info("stopped")
	return code
}
