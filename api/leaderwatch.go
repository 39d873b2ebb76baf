package api

import (
	"context"
	"sync"
	"time"
)

// Round trips to the leader follow raft's view of who leads. A leader cut
// off by a partition that drops packets neither answers nor refuses: a
// request to it would wait for its whole timeout while raft, after one
// heartbeat timeout, has moved on to an election and a new leader. So
// every round trip to the leader (a read-index batch, a relayed request)
// runs in a context that ends, with cause ErrLeaderChanged, as soon as
// raft reports another leader than the node asked; the caller then
// retries against the new leader at once.
//
// Raft reporting no leader (this node stopped hearing from it, an
// election is under way) does not end the round trip: the old leader may
// still answer over HTTP (when only this node is cut off from raft), and
// it refuses, 421, once it no longer leads. A leader that does not answer
// at all is given up after Config.ReadIndexTimeout (a read index) or
// Config.ForwardTimeout (a relayed request), or when the new leader is
// known, whichever comes first.
//
// raft's leader is polled (Raft.Leader is a cheap locked read) by one
// goroutine per Server, and only while some round trip is in flight.

// leaderPollInterval is how often the watcher looks at raft's leader while
// round trips are in flight: small against raft's heartbeat timeout (a
// follower notices a lost leader no sooner than that).
const leaderPollInterval = 10 * time.Millisecond

// leaderSub is one round trip to the leader id, cancelled with
// ErrLeaderChanged when raft reports another leader.
type leaderSub struct {
	id     string
	cancel context.CancelCauseFunc
}

// leaderWatch tracks the round trips in flight and runs the poller while
// there are any.
type leaderWatch struct {
	wg sync.WaitGroup // the poller
	mu sync.Mutex
	// The fields below are guarded by mu.
	subs    map[*leaderSub]struct{}
	running bool // the poller runs
	closed  bool // the Server closed: no new poller
}

// leaderContext returns a context derived from ctx that also ends, with
// cause ErrLeaderChanged, once raft reports a leader other than id ("" for
// a wait while no leader is known). Call cancel when the round trip is
// over.
func (s *Server) leaderContext(ctx context.Context, id string) (context.Context, context.CancelFunc) {
	cctx, cancelCause := context.WithCancelCause(ctx)
	sub := &leaderSub{id: id, cancel: cancelCause}
	lw := &s.leaders
	lw.mu.Lock()
	if lw.subs == nil {
		lw.subs = map[*leaderSub]struct{}{}
	}
	lw.subs[sub] = struct{}{}
	if !lw.running && !lw.closed {
		lw.running = true
		lw.wg.Go(s.pollLeader)
	}
	lw.mu.Unlock()
	if cur, _ := s.raft.Leader(); cur != "" && cur != id {
		cancelCause(ErrLeaderChanged) // changed before we subscribed
	}
	return cctx, func() {
		lw.mu.Lock()
		delete(lw.subs, sub)
		lw.mu.Unlock()
		cancelCause(context.Canceled)
	}
}

// pollLeader cancels the round trips whose leader raft has replaced,
// until none is left or the server closes.
func (s *Server) pollLeader() {
	lw := &s.leaders
	t := time.NewTicker(leaderPollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.baseCtx.Done():
			lw.mu.Lock()
			lw.running = false
			lw.mu.Unlock()
			return
		case <-t.C:
		}
		id, _ := s.raft.Leader()
		lw.mu.Lock()
		for sub := range lw.subs {
			if id != "" && sub.id != id {
				sub.cancel(ErrLeaderChanged)
				delete(lw.subs, sub)
			}
		}
		if len(lw.subs) == 0 {
			lw.running = false
			lw.mu.Unlock()
			return
		}
		lw.mu.Unlock()
	}
}

// close stops the poller for good; the Server's baseCtx must be cancelled
// first.
func (lw *leaderWatch) close() {
	lw.mu.Lock()
	lw.closed = true
	lw.mu.Unlock()
	lw.wg.Wait()
}
