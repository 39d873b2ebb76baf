package consensus_test

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/consensus/consensustest"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// enospcLog fails every append with ENOSPC while fail is set.
type enospcLog struct {
	raft.LogStore
	fail *atomic.Bool
}

func (l *enospcLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }
func (l *enospcLog) StoreLogs(logs []*raft.Log) error {
	if l.fail.Load() {
		return fmt.Errorf("write: %w", syscall.ENOSPC)
	}
	return l.LogStore.StoreLogs(logs)
}

// TestStore_HealthFollowerCannotPersist: while a follower's appends fail,
// Health says it cannot persist, keeps its last contact at the first
// failure (raft's own keeps advancing with the heartbeats) and counts the
// leader's commits it has not applied; all of it clears once appends
// succeed again.
func TestStore_HealthFollowerCannotPersist(t *testing.T) {
	fails := make([]atomic.Bool, 3)
	c := consensustest.MakeCluster(t, 3, consensustest.Options{Config: func(i int, cfg *consensus.Config) {
		cfg.WrapLogStore = func(ls raft.LogStore) raft.LogStore { return &enospcLog{LogStore: ls, fail: &fails[i]} }
	}})
	leader := c.WaitForLeader(t, 10*time.Second)
	c.WaitForIndex(t, apply(t, c, leader, upsert("a")), 10*time.Second)
	f := c.Followers(leader)[0]
	st := c.Store(f)
	if h := st.Health(); !h.CanPersist || h.Lag() != 0 || h.LastAppend.IsZero() {
		t.Fatalf("healthy follower: %+v", h)
	}

	fails[f].Store(true)
	var last uint64
	for i := range 20 {
		last = apply(t, c, leader, upsert(fmt.Sprintf("n%d", i)))
	}
	testwait.Until(t, 10*time.Second, "the follower to know it cannot persist and lags", func() (bool, string) {
		h := st.Health()
		return !h.CanPersist && h.Lag() >= 20 && h.CommitIndex >= last, fmt.Sprintf("%+v", h)
	})
	h := st.Health()
	if !h.LastContact.Equal(h.FailingSince) || h.AppendError == nil {
		t.Errorf("cannot persist: LastContact %v, FailingSince %v, AppendError %v; want LastContact = FailingSince and the error",
			h.LastContact, h.FailingSince, h.AppendError)
	}

	fails[f].Store(false)
	testwait.Until(t, 20*time.Second, "the follower to recover", func() (bool, string) {
		h := st.Health()
		return h.CanPersist && h.Lag() == 0 && h.AppliedIndex >= last && h.FailingSince.IsZero(), fmt.Sprintf("%+v", h)
	})
}
