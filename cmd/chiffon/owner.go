package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node"
)

// ownerCommand declares the owner's state to the desktop it runs beside
// (`chiffon owner active|idle|auto`), through that node's serf RPC as a
// local command (gossip.LocalCommand).
type ownerCommand struct{ ui cli.Ui }

// ownerSettings are the flags of chiffon owner: how to reach the node's
// serf RPC, as chiffon members takes them.
type ownerSettings struct{ rpcAddr, rpcAuth, dataDir string }

func (s *ownerSettings) options() *options {
	*s = ownerSettings{rpcAddr: "127.0.0.1:7373", dataDir: defaultDataDir()}
	o := &options{}
	o.str(&s.rpcAddr, "rpc-addr", "serf RPC address of the desktop (its -rpc-addr)")
	o.str(&s.rpcAuth, "rpc-auth", "serf RPC auth token (default: the one in -data-dir)")
	o.str(&s.dataDir, "data-dir", "data dir of the node at -rpc-addr, whose serf/rpc-auth file holds the token")
	return o
}

func (c *ownerCommand) Synopsis() string {
	return "Declare that a desktop's owner is active or idle (or measure again)"
}

func (c *ownerCommand) Help() string {
	var s ownerSettings
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

` + s.options().help()
}

func (c *ownerCommand) Run(args []string) int {
	var s ownerSettings
	o := s.options()
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
	ms := membersSettings{rpcAuth: s.rpcAuth, dataDir: s.dataDir}
	auth, from, err := ms.token()
	if err != nil {
		c.ui.Error("chiffon owner: " + err.Error())
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := gossip.LocalCommand(ctx, s.rpcAddr, auth, node.LocalOwner, []byte(state))
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "serf RPC") {
			msg = rpcError(s.rpcAddr, from, err)
		}
		c.ui.Error("chiffon owner: " + msg)
		return 1
	}
	c.ui.Output("owner: " + string(out))
	return 0
}
