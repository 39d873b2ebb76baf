package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/node"
	"github.com/chiffon-dev/chiffon/sim"
)

// simOrchestratorCommand is `chiffon sim-orchestrator`, hidden from the
// command list: one orchestrator of `chiffon sim -orchestrators process`.
// It is `chiffon agent` with the run's time scale and raft slack applied
// to the configuration the agent's flags build (sim.ScaleOrchestrator),
// so that orchestrators in their own processes run the sped-up timings
// of the simulated desktops.
type simOrchestratorCommand struct {
	ui cli.Ui
}

func (c *simOrchestratorCommand) Synopsis() string {
	return "Run an orchestrator of chiffon sim with scaled timings (started by chiffon sim)"
}

func (c *simOrchestratorCommand) Help() string {
	return strings.TrimSpace(`
Usage: chiffon sim-orchestrator [-time-scale F] [-raft-slack S] -- AGENT-FLAGS

  Started by "chiffon sim -orchestrators process": runs "chiffon agent
  AGENT-FLAGS" with every gossip and liveness timing divided by F and raft's
  timeouts multiplied by S, as the simulator does to orchestrators in its
  own process. Not for a real cluster.

Options:

  -time-scale=F   speed-up of the simulated run (default 1)
  -raft-slack=S   raft heartbeat, election and lease timeouts times S,
                  1 or more (default 1)
`)
}

func (c *simOrchestratorCommand) Run(args []string) int {
	fs := flag.NewFlagSet("sim-orchestrator", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	scale := fs.Float64("time-scale", 1, "")
	slack := fs.Float64("raft-slack", 1, "")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			c.ui.Output(c.Help())
			return 0
		}
		c.ui.Error("chiffon sim-orchestrator: " + err.Error())
		return 2
	}
	if !(*scale > 0) || math.IsInf(*scale, 0) {
		c.ui.Error(fmt.Sprintf("chiffon sim-orchestrator: -time-scale: %v; want a number more than 0", *scale))
		return 2
	}
	if !(*slack >= 1) || math.IsInf(*slack, 0) {
		c.ui.Error(fmt.Sprintf("chiffon sim-orchestrator: -raft-slack: %v; want 1 or more", *slack))
		return 2
	}
	a := &agentCommand{ui: c.ui, tune: func(nc *node.Config) { sim.ScaleOrchestrator(nc, *scale, *slack) }}
	return a.Run(fs.Args())
}
