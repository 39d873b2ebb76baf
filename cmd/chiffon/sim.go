package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/internal/logging"
	"github.com/chiffon-dev/chiffon/sim"
)

// simCommand runs a simulated fleet (package sim) and prints its report.
type simCommand struct {
	ui cli.Ui
	// out receives the progress lines and the report (default os.Stdout).
	out io.Writer
}

// simSettings are the sim command's flags.
type simSettings struct {
	cfg      sim.Config
	report   string
	logLevel string
}

func (s *simSettings) options() *options {
	*s = simSettings{cfg: sim.DefaultConfig()}
	s.cfg.OrchestratorMode = sim.OrchestratorsInProcess
	c := &s.cfg
	o := &options{}
	o.integer(&c.Desktops, "desktops", "simulated desktops (light: real gossip, tags and telemetry pushes; no probe or work endpoint)")
	o.duration(&c.Duration, "duration", "how long the measured part runs, in real (unscaled) time, after every desktop is online")
	floatOpt(o, &c.Loss, "loss", "packet loss on every link, 0 to under 1 (0.02 is 2 %)")
	floatOpt(o, &c.UDPLossOutside, "udp-loss-outside", "-orchestrators process: the share of UDP packets the host's network drops outside the sim (scripts/sim-loss.sh runs the sim in a network namespace that does and sets this), recorded in the report; the sim drops none itself")
	o.duration(&c.Latency, "latency", "one-way latency of every link (real time)")
	o.duration(&c.Jitter, "jitter", "extra random latency per packet, uniform in [0, jitter)")
	o.integer(&c.Kill, "kill", "desktops that crash (fall silent without leaving) a tenth into the run")
	o.integer(&c.Churn, "churn", "desktops that leave gracefully a tenth into the run and rejoin halfway")
	o.integer(&c.Partition, "partition", "desktops cut off from every other node a tenth into the run, for -partition-for")
	o.duration(&c.PartitionFor, "partition-for", "how long the -partition desktops stay cut off (real time)")
	o.duration(&c.HeartbeatInterval, "heartbeat-interval", "how often each desktop samples its synthetic metrics (real time)")
	floatOpt(o, &c.ChangeProb, "change-prob", "chance that a heartbeat changes a desktop's metrics (and gossips them)")
	floatOpt(o, &c.TimeScale, "time-scale", "divide every gossip and liveness timing and network delay by this: 10 runs ten times faster than real")
	floatOpt(o, &c.RaftSlack, "raft-slack", "multiply the orchestrators' raft heartbeat, election and lease timeouts (500 ms) by this: raft shares the process's CPU with every simulated node")
	o.integer(&c.GossipNodes, "gossip-nodes", "every node's -gossip-nodes: peers each gossip round sends broadcasts to (0: memberlist's 3)")
	o.boolean(&c.PushTelemetry, "push-telemetry", "desktops also send each tag change straight to the raft leader over loopback HTTP, as agents do by default (false: gossip only, the behaviour before pushes)")
	o.integer(&c.RetransmitMult, "retransmit-mult", "every node's -retransmit-mult: sends of each broadcast, × log10(N+1) (0: memberlist's 4)")
	uintOpt(o, &c.Seed, "seed", "seed of the fleet, its metrics, its faults and the network's loss")
	o.integer(&c.JoinWorkers, "join-workers", "desktops joining at once, each to one orchestrator and one desktop already in")
	o.integer(&c.JoinWave, "join-wave", "join the desktops in waves of this many, each once the orchestrators see the last one alive (0: no waves)")
	o.duration(&c.SettleTimeout, "settle-timeout", "give up if the fleet is not all online within this (wall clock)")
	o.str(&c.Dir, "data-dir", "the orchestrators' data dirs (default: a temporary directory, removed at exit)")
	o.str(&c.OrchestratorMode, "orchestrators", "in-process (every node in this process, gossip on the simulated network) or process (each orchestrator a chiffon agent process on 127.0.0.1, desktops on loopback sockets: the leader's RSS and CPU are its own; no -loss, -latency, -jitter or -partition)")
	o.str(&c.OrchestratorBinary, "orchestrator-binary", "-orchestrators process: the chiffon executable to run (default: this one)")
	o.str(&s.report, "report", "also write the report as JSON to this file")
	o.str(&c.CPUProfile, "cpu-profile", "write a CPU profile (pprof) of this process over the measured part to this file")
	o.str(&c.HeapProfile, "heap-profile", "write a heap profile (pprof) of this process at the end of the measured part to this file")
	o.str(&c.StallTrace, "stall-trace", "if this process falls 1 s or more behind its clock in the measured part, write a runtime trace (go tool trace) of the 20 s before the first such stall to this file")
	o.str(&s.logLevel, "log-level", "show the nodes' logs on stderr from this level: debug, info, warn or error (default: none; thousands of nodes shutting down fill a screen)")
	return o
}

// floatOpt and uintOpt add the number flags only sim has.
func floatOpt(o *options, p *float64, name, usage string) {
	o.add(&option{name: name, usage: usage, def: strconv.FormatFloat(*p, 'g', -1, 64), set: func(s string) error {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("want a number such as 0.02")
		}
		*p = v
		return nil
	}})
}

func uintOpt(o *options, p *uint64, name, usage string) {
	o.add(&option{name: name, usage: usage, def: strconv.FormatUint(*p, 10), set: func(s string) error {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("want a whole number")
		}
		*p = v
		return nil
	}})
}

func (c *simCommand) Synopsis() string {
	return "Simulate a fleet of thousands of desktops on a simulated network, and report"
}

func (c *simCommand) Help() string {
	var s simSettings
	return `Usage: chiffon sim [options]

  Runs, in this one process, 3 real orchestrators (raft on loopback TCP with
  raft-boltdb, the leader loop, the HTTP API on 127.0.0.1) and -desktops light
  desktops (the real gossip package and tag codec, synthetic seeded metrics:
  load drifts, GPUs go busy and idle), every node's serf/memberlist on one
  simulated network with -latency, -jitter and -loss. After every desktop is
  online it runs for -duration with -kill crashes, -churn leaves and rejoins
  and -partition cut-off desktops, watching the leader's registry, then
  prints a report (and writes it as JSON with -report): when each crashed
  desktop turned suspect and offline after its silence, false suspicions
  and offlines, raft entries per second, tag change to registry p50/p99,
  query p50/p99, the leader's CPU, memory, elections.

  -time-scale F divides every gossip and liveness timing and network delay
  by F, so the run takes -duration/F; the report converts every timing back
  to real seconds. CPU does not scale: desktops × F is what the machine must
  carry (see docs/PERFORMANCE.md). Ctrl-C stops it.

  -orchestrators process runs each orchestrator as a chiffon agent process
  (-orchestrator-binary, on 127.0.0.1, real raft and HTTP API) and the
  desktops' gossip on real loopback sockets, so that the report's leader RSS
  and CPU are the leader process's own (/proc/PID). The simulated network
  cannot reach other processes: -loss, -latency, -jitter and -partition are
  refused there. With -time-scale or -raft-slack the orchestrators run as
  "chiffon sim-orchestrator" (the same agent, its timings scaled as the
  desktops'). The orchestrators are stopped (SIGTERM) and their data dirs
  removed at the end, also on Ctrl-C.

Options:

` + s.options().help()
}

func (c *simCommand) Run(args []string) int {
	var s simSettings
	rest, err := s.options().parse("sim", args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("unexpected arguments %q", rest)
	}
	var logger *slog.Logger
	if s.logLevel != "" && err == nil {
		var level slog.Level
		if level, err = logging.ParseLevel(s.logLevel); err == nil {
			logger, _ = logging.New(os.Stderr, level, false)
		}
	}
	if err != nil {
		c.ui.Error("chiffon sim: " + strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	}
	out := c.out
	if out == nil {
		out = os.Stdout
	}
	if s.cfg.OrchestratorMode == sim.OrchestratorsProcess && !flagGiven(args, "latency") {
		// -latency's default is the simulated network's; loopback
		// sockets have their own.
		s.cfg.Latency = 0
	}
	s.cfg.Logger = logger
	start := time.Now()
	s.cfg.Progress = func(line string) { fmt.Fprintf(out, "[%7.1fs] %s\n", time.Since(start).Seconds(), line) }
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := sim.Run(ctx, s.cfg)
	if errors.Is(err, sim.ErrInvalidConfig) {
		c.ui.Error("chiffon sim: " + err.Error())
		return 2
	}
	if err != nil {
		c.ui.Error("chiffon sim: " + err.Error())
		return 1
	}
	printReport(out, rep)
	if s.report != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(s.report, append(b, '\n'), 0o644); err != nil {
			c.ui.Error("chiffon sim: write report: " + err.Error())
			return 1
		}
	}
	return 0
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// printReport prints the report's figures, one per line.
func printReport(w io.Writer, r *sim.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, format string, a ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, a...)) }
	row("desktops", "%d (+%d orchestrators), time scale %g, %.0f s real, loss %g, latency %g ms, seed %d; gossip to %d peers a round, retransmit mult %d; telemetry pushes %s",
		r.Desktops, r.Orchestrators, r.TimeScale, r.DurationS, r.Loss, r.LatencyMS, r.Seed, r.GossipNodes, r.RetransmitMult, onOff(r.PushTelemetry))
	if r.UDPLossOutside > 0 {
		row("udp loss outside", "%g of UDP packets dropped by the host's network (scripts/sim-loss.sh), not by the sim", r.UDPLossOutside)
	}
	row("settle", "%.1f s real (joins took %.1f s wall)", r.SettleRealS, r.JoinWallS)
	row("killed", "%d: offline after %s s, suspect after %s s (expected offline %g s; serf failed ≈ %.1f s); %d online again after their silence",
		r.Killed, floats(r.OfflineAfterS), floats(r.SuspectAfterS), r.ExpectedOfflineS, r.ExpectedSerfFailedS, r.KilledOnlineAgain)
	row("false", "suspect %d, offline %d", r.FalseSuspect, r.FalseOffline)
	row("churn / partition", "%d/%d back online; %d/%d back online, last %.1f s after the heal",
		r.ChurnBackOnline, r.Churned, r.PartitionBackOnline, r.Partitioned, r.PartitionHealS)
	if r.PushTelemetry {
		row("pushes", "%d taken by the leader, %d failed (retried)", r.PushesSent, r.PushFailures)
	}
	row("raft", "%.2f entries/s, %d elections, leader %s", r.RaftEntriesPerS, r.Elections, r.Leader)
	row("tag to registry", "p50 %.2f s, p99 %.2f s, max %.2f s (%d of %d changes seen)",
		r.TagToRegistryP50S, r.TagToRegistryP99S, r.TagToRegistryMaxS, r.TagChangesSeen, r.TagChanges)
	if h := r.TagHops; h != nil {
		row("  by hop", "to the reporter p50 %.2f/p99 %.2f s, push taken p50 %.2f/p99 %.2f s, in the registry p50 %.2f/p99 %.2f s (%d landed, %d by gossip, %d overtaken: p99 %.2f s)",
			h.QueueP50S, h.QueueP99S, h.PushP50S, h.PushP99S, h.RegistryP50S, h.RegistryP99S, h.Landed, h.ViaGossip, h.Overtaken, h.OvertakenP99S)
		row("  slowest", "%s: %.2f s (to the reporter %.2f, push %.2f, registry %.2f; -1: none)",
			h.SlowestDesktop, h.SlowestTotalS, h.SlowestQueueS, h.SlowestPushS, h.SlowestRegS)
	}
	row("query", "p50 %.1f ms, p99 %.1f ms (%d, %d failed)", r.QueryP50MS, r.QueryP99MS, r.Queries, r.QueryFails)
	if r.OrchestratorMode == sim.OrchestratorsProcess {
		row("leader", "process %d: CPU %.1f %% of a core, RSS %.1f MiB (peak %.1f)",
			r.LeaderPID, r.LeaderCPUPct, r.LeaderRSSMiB, r.LeaderPeakRSSMiB)
		row("sim process", "desktops: CPU %.1f %%, RSS %.0f MiB (peak %.0f), Go heap %.0f MiB",
			r.ProcessCPUPct, r.ProcessRSSMiB, r.ProcessPeakRSSMiB, r.GoHeapMiB)
	} else {
		row("leader", "CPU %.1f %% of a core; process (every node) CPU %.1f %%, RSS %.0f MiB (peak %.0f), Go heap %.0f MiB",
			r.LeaderCPUPct, r.ProcessCPUPct, r.ProcessRSSMiB, r.ProcessPeakRSSMiB, r.GoHeapMiB)
	}
	if r.SimStalls == 0 {
		row("simulator", "kept up: no stall of 1 s or more")
	} else {
		row("simulator", "%d stalls of 1 s or more (wall), the longest %.2f s wall = %.2f s of run time%s",
			r.SimStalls, r.SimMaxStallWallS, r.SimMaxStallWallS*r.TimeScale, traceNote(r.StallTrace))
	}
	if r.OrchestratorMode != sim.OrchestratorsProcess {
		row("network", "%+v", r.Network)
	}
	_ = tw.Flush()
}

func traceNote(path string) string {
	if path == "" {
		return ""
	}
	return "; trace of the first: " + path
}

// flagGiven reports whether args set the flag name (-name, --name,
// -name=v).
func flagGiven(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			break
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

func floats(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, strconv.FormatFloat(x, 'f', 1, 64))
	}
	return "[" + strings.Join(parts, " ") + "]"
}
