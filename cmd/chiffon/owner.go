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

// ownerCommand declares the owner's state to the desktop it runs beside
// (`chiffon owner active|idle|auto`), through that node's serf RPC as a
// local command (gossip.LocalCommand).
type ownerCommand struct{ ui cli.Ui }

// ownerOptions are chiffon owner's flags: how to reach the desktop.
func ownerOptions(s *membersSettings) *options {
	return localOptions(s, "serf RPC address of the desktop (its -rpc-addr)")
}

func (c *ownerCommand) Synopsis() string {
	return "Declare that a desktop's owner is active or idle (or measure again)"
}

func (c *ownerCommand) Help() string {
	var s membersSettings
	return `Usage: chiffon owner active|idle|auto [options]

  Tells the desktop at -rpc-addr that its owner is at the keyboard (active:
  it takes no new work and applies its -owner-action to running work), has
  left (idle: it takes work again), or hands the decision back to its
  measured sources (auto: logind, input devices, terminals, as its
  -owner-sources say). A declared state holds until the next 'chiffon
  owner'. For kiosks, scripts, screensaver hooks and tests. The node must
  watch its owner (-owner-idle above 0).

  It prints the state in force: active, idle, or unknown (no source
  answers; the desktop takes work). The node refuses the command from any
  other member; the serf RPC token is found as 'chiffon members' finds it.

Options:

` + ownerOptions(&s).help()
}

func (c *ownerCommand) Run(args []string) int {
	var s membersSettings
	o := ownerOptions(&s)
	// The state may come first (chiffon owner active -rpc-addr ADDR) or
	// after the flags.
	var state string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		state, args = args[0], args[1:]
	}
	rest, err := o.parse("owner", args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && state == "" && len(rest) > 0 {
		state, rest = rest[0], rest[1:]
	}
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("unexpected arguments %q", rest)
	}
	if err == nil && state != "active" && state != "idle" && state != "auto" {
		err = fmt.Errorf("state %q; want active, idle or auto", state)
	}
	if err != nil {
		c.ui.Error("chiffon owner: " + strings.TrimPrefix(err.Error(), "usage: ") + "; usage: chiffon owner active|idle|auto [-rpc-addr ADDR]")
		return 2
	}
	out, err := sendLocal(&s, 10*time.Second, node.LocalOwner, []byte(state))
	if err != nil {
		c.ui.Error("chiffon owner: " + err.Error())
		return 1
	}
	c.ui.Output("owner: " + string(out))
	return 0
}
