package node

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// leaderStore is what the leadership owner needs of raft; *consensus.Store
// implements it.
type leaderStore interface {
	// LeaderCh delivers leadership changes, coalesced (the latest value
	// only), so that raft's own notify channel is never blocked; it is
	// closed when the store closes.
	LeaderCh() <-chan bool
	// Barrier waits until every earlier log entry is applied locally.
	Barrier(timeout time.Duration) error
}

// leaderTask is one piece of work an orchestrator does only while it is an
// established leader (the reconciler, the RabbitMQ bridge). run returns
// once ctx ends, having stopped everything it started.
type leaderTask struct {
	name string
	run  func(ctx context.Context)
}

// leadership is the one owner of what an orchestrator does as raft leader,
// in the shape of Consul's leader.go: monitorLeadership follows the
// store's LeaderCh; on gaining leadership leaderLoop runs one Barrier
// (retried until it succeeds or leadership is lost), then
// establishLeadership starts every task under one context and marks the
// node an established leader, which the HTTP API asks before it answers
// reads from its own state; on losing it (or on stop) revokeLeadership
// clears the mark, cancels the context and waits for the tasks to end.
type leadership struct {
	store  leaderStore
	tasks  []leaderTask
	logger *slog.Logger
	// barrierTimeout bounds one Barrier; retry is the pause after a failed one.
	barrierTimeout, retry time.Duration

	// established is true from the term's successful Barrier until it is
	// revoked.
	established atomic.Bool

	// cancel and done belong to the current term (nil between terms); only
	// monitorLeadership's goroutine touches them.
	cancel context.CancelFunc
	done   chan struct{}
}

// newLeadership returns an owner that runs tasks while this node leads.
func newLeadership(store leaderStore, logger *slog.Logger, tasks ...leaderTask) *leadership {
	return &leadership{store: store, tasks: tasks, logger: logger,
		barrierTimeout: 10 * time.Second, retry: 200 * time.Millisecond}
}

// Established reports whether this node leads and has applied everything
// its predecessors committed (its term's Barrier succeeded). The API asks
// it before answering a default or consistent read from local state. Safe
// for concurrent use.
func (l *leadership) Established() bool { return l.established.Load() }

// monitorLeadership follows leadership until stop is closed or the store's
// LeaderCh is, then revokes leadership if held. Every value on LeaderCh
// ends the current term first: a coalesced lose-then-regain arrives as a
// second "true", and the new term must run its own Barrier.
func (l *leadership) monitorLeadership(stop <-chan struct{}) {
	defer l.revokeLeadership()
	ch := l.store.LeaderCh()
	for {
		select {
		case <-stop:
			return
		case leading, ok := <-ch:
			if !ok {
				return
			}
			l.revokeLeadership()
			if leading {
				l.logger.Info("this orchestrator is now the raft leader")
				ctx, cancel := context.WithCancel(context.Background())
				l.cancel, l.done = cancel, make(chan struct{})
				go l.leaderLoop(ctx, l.done)
			} else {
				l.logger.Info("this orchestrator is no longer the raft leader")
			}
		}
	}
}

// leaderLoop is one term: Barrier, then establishLeadership, until ctx
// ends. It closes done when every task has stopped.
func (l *leadership) leaderLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	for attempt := 1; ; attempt++ {
		err := l.store.Barrier(l.barrierTimeout)
		if ctx.Err() != nil {
			return // lost leadership (or stopping) meanwhile
		}
		if err == nil {
			break
		}
		l.logger.Warn("barrier failed; retrying", "err", err, "attempt", attempt)
		t := time.NewTimer(l.retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	var wg sync.WaitGroup
	l.establishLeadership(ctx, &wg)
	<-ctx.Done() // a task that ends early does not end the term
	wg.Wait()
	// A revoke that ran just before establishLeadership's mark is undone
	// here: the mark is false once done is closed.
	l.established.Store(false)
}

// establishLeadership starts every task under ctx, counted in wg, and
// marks this node an established leader.
func (l *leadership) establishLeadership(ctx context.Context, wg *sync.WaitGroup) {
	for _, t := range l.tasks {
		wg.Go(func() {
			t.run(ctx)
			if ctx.Err() == nil {
				l.logger.Warn("leader task ended before leadership did", "task", t.name)
			}
		})
	}
	l.established.Store(true)
	l.logger.Info("leadership established: leader tasks started, answering reads from local state")
}

// revokeLeadership ends the current term, if any: it clears the mark (so
// the API stops answering as leader at once), cancels the term's context
// and waits for its tasks to stop.
func (l *leadership) revokeLeadership() {
	if l.cancel == nil {
		return
	}
	l.established.Store(false)
	l.cancel()
	<-l.done
	l.cancel, l.done = nil, nil
	l.logger.Info("leadership revoked: leader tasks stopped")
}
