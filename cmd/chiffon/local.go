package main

import (
	"context"
	"strings"
	"time"

	"github.com/chiffon-dev/chiffon/gossip"
)

// localOptions are the flags of the commands that tell the node on this
// machine something about itself through its serf RPC (chiffon owner,
// chiffon power): the RPC options of chiffon members, without its filters.
func localOptions(s *membersSettings, addrHelp string) *options {
	*s = membersSettings{rpcAddr: "127.0.0.1:7373", dataDir: defaultDataDir()}
	o := &options{}
	o.str(&s.rpcAddr, "rpc-addr", addrHelp)
	o.str(&s.rpcAuth, "rpc-auth", "serf RPC auth token (default: the one in -data-dir)")
	o.str(&s.dataDir, "data-dir", "data dir of the node at -rpc-addr, whose serf/rpc-auth file holds the token")
	return o
}

// sendLocal sends the local command name with payload to the node at
// s.rpcAddr (the token found as chiffon members finds it) and returns its
// answer, or an error worded for the CLI.
func sendLocal(s *membersSettings, timeout time.Duration, name string, payload []byte) ([]byte, error) {
	auth, from, err := s.token()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := gossip.LocalCommand(ctx, s.rpcAddr, auth, name, payload)
	if err != nil && strings.Contains(err.Error(), "serf RPC at") {
		return nil, rpcErr(rpcError(s.rpcAddr, from, err))
	}
	return out, err
}

// rpcErr is an error with a message already worded for the CLI.
type rpcErr string

func (e rpcErr) Error() string { return string(e) }
