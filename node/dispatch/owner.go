package dispatch

import (
	"sync"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
)

// yieldHintTTL is how long the leader keeps new work off a desktop that
// has just handed an item back for its owner, while gossip brings the
// owner's state to the registry (normally well under a second). Without
// it the planner would place the item straight back there, and the
// desktop would hand it back again, several times a second.
const yieldHintTTL = 3 * time.Second

// yieldHints remembers, by agent ID, when each desktop last handed work
// back for its owner (the leader's clock). Safe for concurrent use: the
// trackers mark, the planner reads.
type yieldHints struct {
	mu sync.Mutex // guards at
	at map[string]time.Time
}

func newYieldHints() *yieldHints { return &yieldHints{at: map[string]time.Time{}} }

// mark records that agent handed work back at now.
func (y *yieldHints) mark(agent string, now time.Time) {
	y.mu.Lock()
	defer y.mu.Unlock()
	y.at[agent] = now
}

// apply returns nodes with the owner of each desktop that handed work back
// within yieldHintTTL of now set to active, so that Plan leaves it out
// until the registry knows (nodes are the FSM's copies: changed in place).
// A hint ends when it expires or once the registry shows the owner
// active: the registry's later "idle" is then not held back by it.
func (y *yieldHints) apply(now time.Time, nodes []consensus.Record) []consensus.Record {
	y.mu.Lock()
	defer y.mu.Unlock()
	if len(y.at) == 0 {
		return nodes
	}
	for id, t := range y.at {
		if now.Sub(t) >= yieldHintTTL {
			delete(y.at, id)
		}
	}
	for i := range nodes {
		n := &nodes[i]
		if _, ok := y.at[n.AgentID]; !ok {
			continue
		}
		if n.Owner == consensus.OwnerActive {
			// Gossip has caught up: from now on the registry says when the
			// owner leaves.
			delete(y.at, n.AgentID)
			continue
		}
		n.Owner = consensus.OwnerActive
	}
	return nodes
}
