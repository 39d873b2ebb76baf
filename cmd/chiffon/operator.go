package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/api/client"
)

// operatorCommand only groups the operator subcommands.
type operatorCommand struct{ ui cli.Ui }

func (c *operatorCommand) Synopsis() string { return "Cluster operator tools" }
func (c *operatorCommand) Help() string {
	return `Usage: chiffon operator <subcommand> [options]

  Tools for operators. Subcommands:

    raft list-peers     list the raft servers (HTTP API)
    raft remove-peer    remove a raft server (HTTP API)
    snapshot save       save a backup of the registry (HTTP API)
    snapshot restore    restore the registry from a backup (HTTP API)`
}
func (c *operatorCommand) Run(args []string) int { return groupRun(c.ui, "operator", args) }

// operatorRaftCommand only groups the raft subcommands.
type operatorRaftCommand struct{ ui cli.Ui }

func (c *operatorRaftCommand) Synopsis() string { return "Inspect and change the raft configuration" }
func (c *operatorRaftCommand) Help() string {
	return `Usage: chiffon operator raft <list-peers|remove-peer> [options]`
}
func (c *operatorRaftCommand) Run(args []string) int {
	return groupRun(c.ui, "operator raft", args)
}

// operatorRaftListPeersCommand is `chiffon operator raft list-peers`.
type operatorRaftListPeersCommand struct{ ui cli.Ui }

type listPeersSettings struct {
	http   httpSettings
	format string
	stale  bool
}

func (s *listPeersSettings) options() *options {
	*s = listPeersSettings{format: "table"}
	o := &options{}
	s.http.add(o)
	o.boolean(&s.stale, "stale", "the contacted node's view instead of the leader's")
	o.str(&s.format, "format", "output format: table or json")
	return o
}

func (c *operatorRaftListPeersCommand) Synopsis() string { return "List the raft servers" }

func (c *operatorRaftListPeersCommand) Help() string {
	var s listPeersSettings
	return `Usage: chiffon operator raft list-peers [options]

  Lists the servers of the raft configuration with their state (leader or
  follower) and whether they vote: GET /v1/operator/raft/peers.

Options:

` + s.options().help()
}

func (c *operatorRaftListPeersCommand) Run(args []string) int {
	var s listPeersSettings
	_, code, done := parseCommon(c.ui, "operator raft list-peers", s.options(), args, func(rest []string) error {
		if len(rest) > 0 {
			return fmt.Errorf("unexpected arguments %q", rest)
		}
		return checkFormat(s.format)
	})
	if done {
		return code
	}
	var peers []apitype.Peer
	if code := s.http.call(c.ui, "operator raft list-peers", func(ctx context.Context, cl *client.Client) (err error) {
		peers, err = cl.RaftPeers(ctx, &client.QueryOptions{Stale: s.stale})
		return err
	}); code != 0 {
		return code
	}
	if s.format == "json" {
		outputJSON(c.ui, peers)
		return 0
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tADDRESS\tSTATE\tVOTER")
	for _, p := range peers {
		fmt.Fprintf(w, "%s\t%s\t%s\t%t\n", p.ID, p.Address, p.State, p.Voter)
	}
	w.Flush()
	c.ui.Output(strings.TrimRight(b.String(), "\n"))
	return 0
}

// operatorRaftRemovePeerCommand is `chiffon operator raft remove-peer ID`.
type operatorRaftRemovePeerCommand struct{ ui cli.Ui }

func (c *operatorRaftRemovePeerCommand) Synopsis() string { return "Remove a server from raft" }

func (c *operatorRaftRemovePeerCommand) Help() string {
	var s httpSettings
	o := &options{}
	s.add(o)
	return `Usage: chiffon operator raft remove-peer [options] ID

  Removes the raft server ID (see list-peers) from the configuration, on the
  leader: DELETE /v1/operator/raft/peers/ID. For a server that is gone for
  good; a live one that is removed stops voting.

Options:

` + o.help()
}

func (c *operatorRaftRemovePeerCommand) Run(args []string) int {
	var s httpSettings
	o := &options{}
	s.add(o)
	var id string
	_, code, done := parseCommon(c.ui, "operator raft remove-peer", o, args, func(rest []string) error {
		if len(rest) != 1 || strings.TrimSpace(rest[0]) == "" {
			return fmt.Errorf("give exactly one raft server ID (see 'chiffon operator raft list-peers'), got %q", rest)
		}
		id = rest[0]
		return nil
	})
	if done {
		return code
	}
	cl, err := s.client()
	if err != nil {
		c.ui.Error("chiffon operator raft remove-peer: " + err.Error())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := cl.RemoveRaftPeer(ctx, id); err != nil {
		c.ui.Error("chiffon operator raft remove-peer: " + apiErrorText(s.addr, err))
		return 1
	}
	c.ui.Output("Removed raft peer " + id)
	return 0
}
