package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node/nodetest"
)

// TestCluster_LeavingLeaderRemovesItself: a leader that leaves gracefully
// takes itself out of the raft configuration through the API server's
// leader-forwarded RemovePeer (run locally on the leader, after its
// leader tasks have stopped), and the other orchestrator then leads a
// configuration of one. (The follower's side is
// TestCluster_LeavingOrchestratorRemovesItself.)
func TestCluster_LeavingLeaderRemovesItself(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: []string{"first"}})
	first := tc.WaitLeader(5 * time.Second)
	second := tc.Add("second", []string{gossip.RoleOrchestrator}, nil)
	testwait.Until(t, 10*time.Second, "second is a voter", testwait.Bool(func() bool {
		s, _ := first.Store().Servers()
		return len(s) == 2
	}))

	if err := first.Leave(); err != nil {
		t.Fatalf("leader's leave: %v", err)
	}
	testwait.Until(t, 10*time.Second, "second leads a configuration of one", func() (bool, string) {
		servers, err := second.Store().Servers()
		ok := err == nil && len(servers) == 1 && servers[0].ID == second.AgentID() && second.Store().IsLeader()
		return ok, fmt.Sprintf("leader %v, servers %+v (%v)", second.Store().IsLeader(), servers, err)
	})
}
