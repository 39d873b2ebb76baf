package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/node"
)

// powerCommand tells the desktop on this machine that it is about to sleep
// or has woken (the systemd sleep hook runs it), through the node's serf
// RPC as a local command (gossip.LocalCommand).
type powerCommand struct{ ui cli.Ui }

func (c *powerCommand) Synopsis() string {
	return "Tell this machine's node it is about to sleep or has woken (suspend|resume)"
}

func (c *powerCommand) Help() string {
	var s membersSettings
	return `Usage: chiffon power suspend|resume [options]

  suspend: the node gossips at once that it is going to sleep; the cluster
  marks it asleep (not offline: no suspicion clock), places no work on it,
  and may wake it with a wake-on-LAN packet when work fits only there.
  resume: the node samples at once, gossips the fresh figures and rejoins;
  it is online again within seconds.

  scripts/systemd/chiffon-sleep (installed by scripts/install.sh into
  systemd's system-sleep directory) runs both around every suspend.
  The serf RPC token is found as for 'chiffon members'.

Options:

` + powerOptions(&s).help()
}

// powerOptions are chiffon power's flags: how to reach the node.
func powerOptions(s *membersSettings) *options {
	return localOptions(s, "serf RPC address of the node on this machine")
}

func (c *powerCommand) Run(args []string) int {
	var s membersSettings
	o := powerOptions(&s)
	rest, err := o.parse("power", args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && (len(rest) != 1 || (rest[0] != node.PowerSuspend && rest[0] != node.PowerResume)) {
		err = fmt.Errorf("want one command, suspend or resume, not %q", rest)
	}
	if err != nil {
		c.ui.Error("chiffon power: " + strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	}
	out, err := sendLocal(&s, 15*time.Second, node.PowerCommand, []byte(rest[0]))
	if err != nil {
		c.ui.Error("chiffon power " + rest[0] + ": " + err.Error())
		return 1
	}
	c.ui.Output(string(out))
	return 0
}
