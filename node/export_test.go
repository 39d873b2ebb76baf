package node

import (
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// This file gives the external tests (package node_test, which use
// node/nodetest and so cannot live in package node) the internals they
// drive, and the internal tests their wait helper.

// GoSilent ends n's loops and closes its gossip without a leave, so its
// peers see it fail while its raft runs on.
func (n *Node) GoSilent() error {
	n.stopLoops()
	return n.gossip.Close()
}

// LeaveRaft is n's graceful raft leave on its own, without serf's.
func (n *Node) LeaveRaft(timeout time.Duration) error { return n.leaveRaft(timeout) }

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, timeout, what, testwait.Bool(cond))
}
