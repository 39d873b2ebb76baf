package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// serverIDs is node i's view of the raft configuration's IDs.
func (ac *apiCluster) serverIDs(i int) []string {
	servers, _ := ac.c.Store(i).Servers()
	var ids []string
	for _, s := range servers {
		ids = append(ids, s.ID)
	}
	return ids
}

// TestServer_RemovePeerForwardsToLeader: Server.RemovePeer, the operation a
// leaving orchestrator runs on itself, removes the caller from a follower
// (forwarded to the leader, with the cluster's token) and from the leader
// (locally; raft then elects another), and reports ErrNoSuchPeer once
// the peer is gone.
func TestServer_RemovePeerForwardsToLeader(t *testing.T) {
	const token = "s3cret-token"
	ac := makeAPICluster(t, 3, func(_ int, c *Config) { c.Token = token })
	leader := ac.c.WaitForLeader(t, 10*time.Second)
	follower := ac.c.Followers(leader)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ac.mu.Lock()
	fsrv, lsrv := ac.srv[follower], ac.srv[leader]
	ac.mu.Unlock()
	fid, lid := ac.c.ID(follower), ac.c.ID(leader)

	// From a follower: forwarded to the leader.
	if err := fsrv.RemovePeer(ctx, fid); err != nil {
		t.Fatalf("follower removing itself: %v", err)
	}
	if ids := ac.serverIDs(leader); len(ids) != 2 || slices.Contains(ids, fid) {
		t.Fatalf("after the follower's removal the leader has %v", ids)
	}
	if err := lsrv.RemovePeer(ctx, fid); !errors.Is(err, ErrNoSuchPeer) {
		t.Fatalf("removing it again: %v, want ErrNoSuchPeer", err)
	}

	// From the leader: removed here; the last server then leads alone.
	if err := lsrv.RemovePeer(ctx, lid); err != nil {
		t.Fatalf("leader removing itself: %v", err)
	}
	var rest int
	for _, i := range ac.c.Live() {
		if i != leader && i != follower {
			rest = i
		}
	}
	testwait.Until(t, 10*time.Second, "the remaining server leads a configuration of one", func() (bool, string) {
		ids := ac.serverIDs(rest)
		return ac.c.Store(rest).IsLeader() && slices.Equal(ids, []string{ac.c.ID(rest)}),
			fmt.Sprintf("leader %v, servers %v", ac.c.Store(rest).IsLeader(), ids)
	})
}

// TestServer_RemovePeerGivesUpAtDeadline: with no leader anywhere,
// RemovePeer retries until its context ends and says why it gave up.
func TestServer_RemovePeerGivesUpAtDeadline(t *testing.T) {
	fr := &fakeRaft{id: "f-1"} // knows no leader
	s, _ := newTestServer(t, consensus.NewFSM(), fr, func(c *Config) { c.RemovePeer = func(string) error { return nil } })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := s.RemovePeer(ctx, "f-1")
	if !errors.Is(err, ErrNoLeader) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RemovePeer with no leader: %v, want ErrNoLeader and the deadline", err)
	}
}
