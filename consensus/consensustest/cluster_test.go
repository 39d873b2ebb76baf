package consensustest

import (
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

func TestMakeCluster_NoBootstrap(t *testing.T) {
	c := MakeCluster(t, 2, Options{NoBootstrap: true})
	if got := c.Store(0).FSM().Index(); got != 0 {
		t.Fatalf("fresh node at index %d", got)
	}
	// Bootstrap node 0 alone, then add node 1 as a voter.
	if err := c.Store(0).Bootstrap(nil); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 5*time.Second, "node-0 to lead", testwait.Bool(c.Store(0).IsLeader))
	if err := c.Store(0).AddVoter(c.ID(1), c.Addr(1)); err != nil {
		t.Fatal(err)
	}
	if got := c.WaitForLeader(t, 5*time.Second); got != 0 {
		t.Fatalf("leader %d, want 0", got)
	}
	idx, err := c.Store(0).Apply(consensus.DeleteNodes{At: time.Now(), AgentIDs: []string{"x"}}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitForIndex(t, idx, 5*time.Second)
}

func TestCluster_RestartOnDisk(t *testing.T) {
	c := MakeCluster(t, 1, Options{OnDisk: true})
	c.WaitForLeader(t, 5*time.Second)
	idx, err := c.Store(0).Apply(consensus.DeleteNodes{At: time.Now(), AgentIDs: []string{"x"}}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	before := c.Store(0)
	c.Restart(0)
	if c.Store(0) == before {
		t.Fatal("Restart kept the old Store")
	}
	c.WaitForLeader(t, 5*time.Second)
	c.WaitForIndex(t, idx, 5*time.Second)
}
