package node

import (
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
)

// serversSupport reports whether every server of the raft configuration
// says (gossip tag rc) that it can apply raft command type t. The leader
// writes a command newer than 0.1.0's only then: a follower of an older
// release stops on a command it does not know, so in the middle of a
// rolling upgrade the newer features wait (docs/OPERATIONS.md, "Versions
// and rolling upgrades"). A server whose member is unknown, or that does
// not say (0.1.0), counts as applying 1–7.
func (n *Node) serversSupport(t consensus.CommandType) bool {
	if n.store == nil || n.gossip == nil {
		return false
	}
	servers, err := n.store.Servers()
	if err != nil {
		return false
	}
	said := make(map[string]int, len(servers))
	for _, m := range n.gossip.Serf().Members() {
		if info, err := gossip.DecodeTags(m.Tags); err == nil && info.AgentID != "" {
			said[info.AgentID] = info.RaftCommands
		}
	}
	return allSupport(servers, said, t)
}

// allSupport reports whether every server said it applies t.
func allSupport(servers []consensus.Server, said map[string]int, t consensus.CommandType) bool {
	for _, s := range servers {
		if said[s.ID] < int(t) {
			return false
		}
	}
	return len(servers) > 0
}
