// Package sim runs a simulated Chiffon fleet in one process: N light
// desktops (the real gossip package and tag codec, nothing else) and a few
// real orchestrators (node.Node with raft on loopback TCP and raft-boltdb,
// the real leader loop and the HTTP API on loopback), every node's gossip
// on one gossip/simnet network. It drives the desktops' metrics, crashes,
// leaves, rejoins and partitions, watches the leader's registry and
// answers with a Report in real-time figures. `chiffon sim` is its command
// line; DESIGN.md says what is real, what is not and how time scale works.
package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/gossip/simnet"
	"github.com/chiffon-dev/chiffon/node"
	"github.com/chiffon-dev/chiffon/node/nodetest"
)

// Errors returned by Run.
var (
	// ErrInvalidConfig wraps every validation failure of a Config.
	ErrInvalidConfig = errors.New("sim: invalid configuration")
	// ErrNotSettled means the fleet did not reach its starting state (a
	// leader, every desktop online in the registry) within SettleTimeout.
	ErrNotSettled = errors.New("sim: fleet did not settle")
)

// Config configures a run. Durations are in real time unless they say
// wall: the run takes Duration/TimeScale of the wall clock.
type Config struct {
	// Desktops and Orchestrators count the nodes (3 orchestrators by
	// default).
	Desktops      int
	Orchestrators int
	// Duration is how long the measured part of the run lasts, after the
	// fleet has settled (real time).
	Duration time.Duration
	// Loss, Latency and Jitter are the default link between any two nodes
	// (one way; simulated time).
	Loss    float64
	Latency time.Duration
	Jitter  time.Duration
	// UDPLossOutside is the share of UDP packets the host's network drops
	// outside the simulator (process mode: scripts/sim-loss.sh runs the
	// sim in a network namespace that does), recorded in the report; the
	// sim itself drops nothing.
	UDPLossOutside float64
	// Kill desktops crash (fall silent, no leave) a tenth into the run.
	Kill int
	// Churn desktops leave gracefully a tenth into the run and rejoin
	// halfway through, under the same name and agent_id from a new
	// address (a laptop back on another network).
	Churn int
	// Partition desktops are cut off from every other node a tenth into
	// the run, for PartitionFor, then healed.
	Partition    int
	PartitionFor time.Duration
	// HeartbeatInterval is each desktop's sampling period; ChangeProb the
	// chance that a heartbeat changes its metrics (and so gossips them).
	HeartbeatInterval time.Duration
	ChangeProb        float64
	// TimeScale divides every gossip and liveness timing and the network's
	// delays (see DESIGN.md): at 10 the run is ten times faster than real.
	TimeScale float64
	// RaftSlack multiplies the orchestrators' raft heartbeat, election
	// and lease timeouts (1, the default, keeps the real 500 ms). Raft is
	// not scaled: it runs on loopback TCP at the machine's speed, but in
	// one Go scheduler with every simulated node, and a process that is
	// busy simulating hundreds of desktops at a time scale keeps raft's
	// heartbeats waiting for a CPU longer than a real orchestrator would
	// (DESIGN.md). With a slack of 4 an election means raft starved for
	// 2 s instead of 500 ms.
	RaftSlack float64
	// GossipNodes and RetransmitMult set every node's gossip budget
	// (gossip.Config; 0 keeps memberlist's 3 and 4): what `chiffon agent
	// -gossip-nodes -retransmit-mult` would run the fleet with.
	GossipNodes    int
	RetransmitMult int
	// PushTelemetry: each desktop also sends every tag change straight
	// to the raft leader over the orchestrators' HTTP API, as `chiffon
	// agent -push-telemetry` (the default) does (node/telemetry). The
	// pushes go over loopback HTTP, honouring the network's partitions
	// but not its latency or loss (DESIGN.md).
	PushTelemetry bool
	// Seed makes the fleet, its metrics and its faults repeatable (not the
	// Go scheduler).
	Seed uint64
	// JoinWorkers desktops join at once, each to one orchestrator and one
	// desktop already in (staggered joins: see DESIGN.md).
	JoinWorkers int
	// JoinWave, if more than 0, joins the desktops in waves of this many:
	// each wave starts once every orchestrator's serf has the desktops
	// joined so far alive, so that the memberlist broadcast queues of the
	// nodes already in have drained the last wave's alives (a fleet built
	// over time rather than in one storm; see DESIGN.md). 0 joins without
	// pause.
	JoinWave int
	// SettleTimeout bounds the start (wall clock).
	SettleTimeout time.Duration
	// Dir holds the orchestrators' data dirs; "" uses a temporary
	// directory removed at the end.
	Dir string
	// OrchestratorMode is OrchestratorsInProcess (the default) or
	// OrchestratorsProcess: each orchestrator a `chiffon agent` process
	// (OrchestratorBinary, default this executable) and the desktops on
	// real loopback sockets (process.go).
	OrchestratorMode   string
	OrchestratorBinary string
	// CPUProfile, if set, receives the CPU profile of the measured part
	// (pprof format; in process mode, of this process: the desktops), and
	// HeapProfile a heap profile taken at its end: where a large fleet's
	// CPU and memory go (docs/PERFORMANCE.md).
	CPUProfile  string
	HeapProfile string
	// StallTrace, if set, receives a runtime execution trace (`go tool
	// trace`) of the 20 s before the measured part's first stall and 2 s
	// after it (Report.SimStalls); nothing is written without a stall.
	StallTrace string
	// Logger receives the nodes' logs (nil: discarded); Progress, if set,
	// receives a line at each phase.
	Logger   *slog.Logger
	Progress func(string)
}

// DefaultConfig is 1,000 desktops at real SWIM timings for ten minutes on
// a lossless 1 ms network.
func DefaultConfig() Config {
	return Config{Desktops: 1000, Orchestrators: 3, Duration: 10 * time.Minute, Latency: time.Millisecond,
		PartitionFor: 30 * time.Second, HeartbeatInterval: 30 * time.Second, ChangeProb: 0.5, TimeScale: 1, RaftSlack: 1, Seed: 1,
		PushTelemetry: true,
		JoinWorkers:   4, SettleTimeout: 10 * time.Minute}
}

func (c *Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case c.Desktops < 1:
		return bad("-desktops: %d; want 1 or more", c.Desktops)
	case c.Orchestrators < 1:
		return bad("orchestrators: %d; want 1 or more", c.Orchestrators)
	case c.Kill+c.Churn+c.Partition > c.Desktops:
		return bad("-kill + -churn + -partition (%d) exceed -desktops (%d)", c.Kill+c.Churn+c.Partition, c.Desktops)
	case c.Loss < 0 || c.Loss >= 1:
		return bad("-loss: %v; want 0 to under 1", c.Loss)
	case c.UDPLossOutside < 0 || c.UDPLossOutside >= 1:
		return bad("-udp-loss-outside: %v; want 0 to under 1", c.UDPLossOutside)
	case c.TimeScale <= 0:
		return bad("-time-scale: %v; want more than 0", c.TimeScale)
	case c.RaftSlack < 1:
		return bad("-raft-slack: %v; want 1 or more", c.RaftSlack)
	case c.Duration <= 0 || c.HeartbeatInterval <= 0:
		return bad("-duration and -heartbeat-interval must be positive")
	case c.GossipNodes < 0 || c.RetransmitMult < 0:
		return bad("-gossip-nodes and -retransmit-mult: %d and %d; want 0 (memberlist's default) or more", c.GossipNodes, c.RetransmitMult)
	case c.ChangeProb < 0 || c.ChangeProb > 1:
		return bad("-change-prob: %v; want 0 to 1", c.ChangeProb)
	}
	if err := c.validateMode(); err != nil {
		return err
	}
	if c.JoinWorkers < 1 {
		c.JoinWorkers = 1
	}
	if c.SettleTimeout <= 0 {
		c.SettleTimeout = DefaultConfig().SettleTimeout
	}
	return nil
}

// run is one simulation in progress. Its fields are set up by Run and then
// owned by Run's goroutine (the driver), except where noted.
type run struct {
	cfg     Config
	t       timings
	logger  *slog.Logger
	nw      *simnet.Network
	cluster *nodetest.Cluster // in-process mode
	procs   *procCluster      // process mode
	orchs   []string
	desks   []*desktop
	rng     *rand.Rand
	rep     *Report
	obs     *observer
	// push is how desktops reach the leader (nil: gossip only); set
	// once the orchestrators are up.
	push *pushConfig
	// hops follows each change through the push (nil: gossip only).
	hops *hopLog
}

// Run runs one simulation and reports on it. It returns early with ctx's
// error, having closed everything, if ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// The profiles are written at the end of a run that may take an
	// hour: find out now that their files can be written.
	for flag, path := range map[string]string{"-cpu-profile": cfg.CPUProfile, "-heap-profile": cfg.HeapProfile, "-stall-trace": cfg.StallTrace} {
		if path == "" {
			continue
		}
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, flag, err)
		}
		if flag == "-stall-trace" {
			_ = os.Remove(path) // written only if there is a stall
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &run{cfg: cfg, t: timings{scale: cfg.TimeScale, raftSlack: cfg.RaftSlack, gossipNodes: cfg.GossipNodes, retransmitMult: cfg.RetransmitMult}, logger: logger, rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed))}
	r.rep = &Report{Desktops: cfg.Desktops, Orchestrators: cfg.Orchestrators, OrchestratorMode: cfg.OrchestratorMode, TimeScale: cfg.TimeScale,
		DurationS: cfg.Duration.Seconds(), Loss: cfg.Loss, UDPLossOutside: cfg.UDPLossOutside, LatencyMS: ms(cfg.Latency), Seed: cfg.Seed}
	nc := simnet.DefaultConfig()
	nc.Seed, nc.TimeScale = cfg.Seed, cfg.TimeScale
	nc.Default = simnet.Link{Latency: cfg.Latency, Jitter: cfg.Jitter, Loss: cfg.Loss}
	nw, err := simnet.New(nc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	r.nw = nw
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "chiffon-sim-"); err != nil {
			_ = nw.Close()
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	// Tear down in reverse: desktops, orchestrators, then the network
	// under them all.
	defer func() { _ = nw.Close() }()
	if cfg.OrchestratorMode == OrchestratorsProcess {
		if r.procs, err = r.startProcs(dir); err != nil {
			return nil, err
		}
		defer r.procs.close()
	} else {
		r.cluster, err = nodetest.New(nodetest.Config{Dir: dir, Logger: logger, Node: r.orchestratorConfig})
		if err != nil {
			return nil, err
		}
		defer func() { _ = r.cluster.Close() }()
	}
	defer r.closeDesktops()

	if err := r.start(ctx); err != nil {
		return nil, err
	}
	if err := r.measure(ctx); err != nil {
		return nil, err
	}
	return r.rep, nil
}

func (r *run) progress(format string, a ...any) {
	if r.cfg.Progress != nil {
		r.cfg.Progress(fmt.Sprintf(format, a...))
	}
}

// orchestratorConfig puts an orchestrator's gossip on the network and
// scales its timings (nodetest.Config.Node).
func (r *run) orchestratorConfig(name string, nc *node.Config) error {
	tr, err := r.nw.NewTransport(name)
	if err != nil {
		return err
	}
	nc.Gossip.Transport = tr
	r.t.node(nc)
	nc.Orchestrator.BootstrapExpect = r.cfg.Orchestrators
	return nil
}

// start brings up the orchestrators, waits for a leader, joins the
// desktops and waits until the registry has every desktop online.
func (r *run) start(ctx context.Context) error {
	t0 := time.Now()
	deadline := t0.Add(r.cfg.SettleTimeout)
	for i := range r.cfg.Orchestrators {
		name := fmt.Sprintf("orch-%d", i+1)
		if r.procs == nil {
			var err error
			labelled(name, func() {
				_, err = r.cluster.Add(ctx, name, []string{gossip.RoleOrchestrator}, nil)
			})
			if err != nil {
				return err
			}
		}
		r.orchs = append(r.orchs, name)
	}
	if err := r.waitUntil(ctx, deadline, "a raft leader", func() bool { return r.leaderName() != "" }); err != nil {
		return err
	}
	r.progress("%d orchestrators up (%s), %s leads, in %s", len(r.orchs), r.cfg.OrchestratorMode, r.leaderName(), since(t0))
	if r.cfg.PushTelemetry {
		r.hops = newHopLog()
		r.push = r.newPushConfig()
	}

	for i := range r.cfg.Desktops {
		d := newDesktop(i, r.cfg.Seed)
		if r.hops != nil {
			d.onOffer = r.hops.offer
		}
		r.desks = append(r.desks, d)
	}
	t1 := time.Now()
	jctx, cancel := context.WithDeadline(ctx, deadline)
	err := r.joinAll(jctx)
	cancel()
	if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: desktops still joining after %s", ErrNotSettled, r.cfg.SettleTimeout)
	}
	if err != nil {
		return err
	}
	r.rep.JoinWallS = time.Since(t1).Seconds()
	r.progress("%d desktops joined in %s wall", len(r.desks), since(t1))
	// Settled once every desktop has been online in the registry: on a
	// starved machine some flap (falsely failed, then back) and may
	// never all be online at one poll; the measured part counts those.
	want, seen := len(r.desks), map[string]bool{}
	if err := r.waitUntil(ctx, deadline, "every desktop online in the registry", func() bool {
		r.onlineDesktops(seen)
		return len(seen) == want
	}); err != nil {
		return fmt.Errorf("%w (%d of %d desktops were online at some poll; leader %q)", err, len(seen), want, r.leaderName())
	}
	r.rep.SettleRealS = time.Since(t1).Seconds() * r.cfg.TimeScale
	r.progress("registry has had all %d desktops online %s wall after the first join", want, since(t1))
	return nil
}

// joinAll starts every desktop, JoinWorkers at a time, each joining one
// orchestrator (round robin) and one desktop that joined before it: no
// single seed takes every join's push-pull.
func (r *run) joinAll(ctx context.Context) error {
	seeds := make([]string, 0, len(r.orchs))
	for _, name := range r.orchs {
		if addr := r.orchestratorGossip(name); addr != "" {
			seeds = append(seeds, addr)
		}
	}
	var (
		mu     sync.Mutex
		joined []string // addresses of desktops already in; guarded by mu
		errs   []error  // guarded by mu
	)
	next := make(chan int)
	var wg sync.WaitGroup
	for range r.cfg.JoinWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				d := r.desks[i]
				rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(i)))
				var err error
				// A busy machine may time a join out: try again with
				// other seeds, a few times.
				for try := range 3 {
					join := []string{seeds[(i+try)%len(seeds)]}
					mu.Lock()
					if len(joined) > 0 {
						join = append(join, joined[rng.IntN(len(joined))])
					}
					mu.Unlock()
					if err = d.start(ctx, r.newTransport, r.reporter, r.t, join, r.logger); err == nil || ctx.Err() != nil {
						break
					}
					r.logger.Warn("desktop join failed; trying other seeds", "desktop", d.name, "try", try+1, "err", err)
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					joined = append(joined, d.tr.Addr())
					if k := len(joined); k%max(1, len(r.desks)/10) == 0 {
						r.progress("%d desktops joined", k)
					}
				}
				mu.Unlock()
			}
		}()
	}
	for i := range r.desks {
		if w := r.cfg.JoinWave; w > 0 && i > 0 && i%w == 0 {
			if err := r.waitWave(ctx, i, func() int { mu.Lock(); defer mu.Unlock(); return len(joined) + len(errs) }); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				break
			}
		}
		select {
		case next <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// waitWave waits until the first n desktops have finished joining (done
// counts those that joined or failed) and every orchestrator's serf sees
// at least that many desktops alive, or ctx ends (the caller sees it). An
// orchestrator process that exits ends the wait with its error.
func (r *run) waitWave(ctx context.Context, n int, done func() int) error {
	t0, said := time.Now(), time.Now()
	for {
		if err := r.orchestratorsGone(); err != nil {
			return err
		}
		seen := r.desktopsAlive()
		if done() >= n && slices.Min(seen) >= n {
			r.progress("wave: the orchestrators see %d desktops alive (waited %s)", n, since(t0))
			return nil
		}
		if time.Since(said) >= 30*time.Second {
			said = time.Now()
			r.progress("wave: waiting %s for %d desktops alive; the orchestrators see %v", since(t0), n, seen)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.settlePoll()):
		}
	}
}

// desktopsAlive counts, for each orchestrator, the members its serf has
// alive, less the orchestrators (in process mode from each orchestrator
// process's /metrics).
func (r *run) desktopsAlive() []int {
	var seen []int
	if r.procs != nil {
		for _, p := range r.procs.orchs {
			if alive, err := r.procs.aliveMembers(p); err == nil {
				seen = append(seen, alive-len(r.orchs))
			} else {
				seen = append(seen, 0) // not answering: not seen yet
			}
		}
		return seen
	}
	for _, name := range r.orchs {
		nd := r.cluster.Node(name)
		if nd == nil {
			continue
		}
		alive := 0
		for _, m := range nd.Gossip().Serf().Members() {
			if m.Status == serf.StatusAlive {
				alive++
			}
		}
		seen = append(seen, alive-len(r.orchs))
	}
	if len(seen) == 0 {
		seen = append(seen, 0)
	}
	return seen
}

// onlineDesktops adds the desktops online in the leader's registry to
// seen.
func (r *run) onlineDesktops(seen map[string]bool) {
	recs, _ := r.leaderRegistry()
	for _, rec := range recs {
		if rec.Status == "online" && slices.Contains(rec.Roles, gossip.RoleDesktop) {
			seen[rec.Name] = true
		}
	}
}

// waitUntil polls cond every 50 ms until it holds, deadline passes
// (ErrNotSettled) or ctx ends.
func (r *run) waitUntil(ctx context.Context, deadline time.Time, what string, cond func() bool) error {
	for !cond() {
		if err := r.orchestratorsGone(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: no %s within %s", ErrNotSettled, what, r.cfg.SettleTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.settlePoll()):
		}
	}
	return nil
}

// closeDesktops closes every desktop still up, a few at a time.
func (r *run) closeDesktops() {
	var wg sync.WaitGroup
	next := make(chan *desktop)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range next {
				if d.up {
					d.closeReporter()
					_ = d.g.Close()
					_ = d.tr.Shutdown()
					d.up = false
				}
			}
		}()
	}
	for _, d := range r.desks {
		next <- d
	}
	close(next)
	wg.Wait()
	r.push.close()
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile is the p-th percentile (0–100) of xs by nearest rank; -1
// for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return -1
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}
