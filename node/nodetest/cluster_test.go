package nodetest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node/nodetest"
)

// TestCluster_InmemRestartRejoins: an orchestrator killed and restarted on
// the in-memory transport comes back with its raft state and its routes,
// and catches up with what was written while it was down.
func TestCluster_InmemRestartRejoins(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: nodetest.Names("o", 3), Desktops: []string{"d"}, InmemRaft: true})
	l := tc.WaitLeader(10 * time.Second)
	tc.WaitReady(10 * time.Second)
	victim := ""
	for _, name := range tc.Names() {
		if name != tc.LeaderName() && name != "d" {
			victim = name
		}
	}
	tc.Kill(victim)
	if tc.Up(victim) || len(tc.Orchestrators()) != 2 {
		t.Fatalf("%s still counted as up", victim)
	}
	tc.Kill("d")
	tc.WaitStatus(l, "d", consensus.StatusSuspect, 5*time.Second)
	back := tc.Restart(victim)
	testwait.Until(t, 10*time.Second, victim+" caught up", func() (bool, string) {
		return tc.Status(back, "d") == consensus.StatusSuspect || tc.Status(back, "d") == consensus.StatusOffline,
			string(tc.Status(back, "d"))
	})
	if got := len(tc.Orchestrators()); got != 3 {
		t.Fatalf("%d live orchestrators after the restart, want 3", got)
	}
}

func TestCluster_Misuse(t *testing.T) {
	if _, err := nodetest.New(nodetest.Config{Dir: t.TempDir(), Orchestrators: []string{"a"}, Desktops: []string{"a"}}); !errors.Is(err, nodetest.ErrNameTaken) {
		t.Errorf("a name twice: %v, want ErrNameTaken", err)
	}
	if _, err := nodetest.New(nodetest.Config{Desktops: []string{"a"}}); err == nil {
		t.Error("no Dir: no error")
	}
	tc := nodetest.Start(t, nodetest.Config{Desktops: []string{"a"}})
	if err := tc.Cluster.Partition("a"); !errors.Is(err, nodetest.ErrNoPartitions) {
		t.Errorf("Partition over TCP raft: %v, want ErrNoPartitions", err)
	}
	if err := tc.Cluster.Kill("nobody"); !errors.Is(err, nodetest.ErrUnknownNode) {
		t.Errorf("Kill(nobody): %v, want ErrUnknownNode", err)
	}
}
