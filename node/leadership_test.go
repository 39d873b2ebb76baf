package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// fakeLeaderStore is a leaderStore whose leadership the test drives and
// whose Barrier runs a hook and is counted.
type fakeLeaderStore struct {
	ch       chan bool
	barriers atomic.Int32
	// barrier, if set, decides each Barrier's outcome (n counts from 1).
	barrier func(n int32) error
}

func (f *fakeLeaderStore) LeaderCh() <-chan bool { return f.ch }

func (f *fakeLeaderStore) Barrier(time.Duration) error {
	n := f.barriers.Add(1)
	if f.barrier != nil {
		return f.barrier(n)
	}
	return nil
}

// fakeTask is a leader task that records its starts and whether it runs.
type fakeTask struct {
	starts, running atomic.Int32
}

func (t *fakeTask) task(name string) leaderTask {
	return leaderTask{name: name, run: func(ctx context.Context) {
		t.starts.Add(1)
		t.running.Add(1)
		defer t.running.Add(-1)
		<-ctx.Done()
	}}
}

// fakeOrch is one orchestrator's leadership owner with a fake store and a
// reconciler and a bridge that only record their lives.
type fakeOrch struct {
	name               string
	store              *fakeLeaderStore
	l                  *leadership
	reconciler, bridge fakeTask
	stop               chan struct{}
	done               chan struct{}
}

func startFakeOrch(t *testing.T, name string, barrier func(int32) error) *fakeOrch {
	o := &fakeOrch{name: name, store: &fakeLeaderStore{ch: make(chan bool), barrier: barrier},
		stop: make(chan struct{}), done: make(chan struct{})}
	o.l = newLeadership(o.store, testlog.New(t, slog.LevelDebug).With("node", name),
		o.reconciler.task("reconciler"), o.bridge.task("bridge"))
	o.l.retry = time.Millisecond
	go func() {
		defer close(o.done)
		o.l.monitorLeadership(o.stop)
	}()
	t.Cleanup(o.close)
	return o
}

func (o *fakeOrch) close() {
	select {
	case <-o.stop:
	default:
		close(o.stop)
	}
	<-o.done
}

// state says what o is doing: established, and how many of its tasks run.
func (o *fakeOrch) state() string {
	return fmt.Sprintf("%s: established=%v reconciler=%d bridge=%d barriers=%d", o.name, o.l.Established(),
		o.reconciler.running.Load(), o.bridge.running.Load(), o.store.barriers.Load())
}

func (o *fakeOrch) leading() bool {
	return o.l.Established() && o.reconciler.running.Load() == 1 && o.bridge.running.Load() == 1
}

func (o *fakeOrch) idle() bool {
	return !o.l.Established() && o.reconciler.running.Load() == 0 && o.bridge.running.Load() == 0
}

func waitState(t *testing.T, what string, cond func() bool, orchs ...*fakeOrch) {
	t.Helper()
	testwait.Until(t, 5*time.Second, what, func() (bool, string) {
		s := ""
		for _, o := range orchs {
			s += o.state() + "; "
		}
		return cond(), s
	})
}

// TestLeadership_LeaderChangeMovesTasks: on a leader change the new leader
// runs the reconciler and the bridge after exactly one Barrier for its
// term, and the old one stops both and stops answering as leader.
func TestLeadership_LeaderChangeMovesTasks(t *testing.T) {
	a := startFakeOrch(t, "a", nil)
	b := startFakeOrch(t, "b", nil)

	a.store.ch <- true
	waitState(t, "a leads", func() bool { return a.leading() && b.idle() }, a, b)

	a.store.ch <- false
	b.store.ch <- true
	waitState(t, "b leads, a stopped", func() bool { return a.idle() && b.leading() }, a, b)

	b.store.ch <- false
	a.store.ch <- true
	waitState(t, "a leads again, b stopped", func() bool { return a.leading() && b.idle() }, a, b)

	// One Barrier per term, and each task started once per term.
	for _, c := range []struct {
		o     *fakeOrch
		terms int32
	}{{a, 2}, {b, 1}} {
		if n := c.o.store.barriers.Load(); n != c.terms {
			t.Errorf("%s ran %d barriers in %d terms, want one per term", c.o.name, n, c.terms)
		}
		if r, br := c.o.reconciler.starts.Load(), c.o.bridge.starts.Load(); r != c.terms || br != c.terms {
			t.Errorf("%s started the reconciler %d and the bridge %d times in %d terms", c.o.name, r, br, c.terms)
		}
	}

	// A coalesced lose-and-regain (a second "true") is a new term: the old
	// tasks stop, and the new term runs its own Barrier.
	a.store.ch <- true
	waitState(t, "a's third term", func() bool { return a.leading() && a.reconciler.starts.Load() == 3 }, a)
	if n := a.store.barriers.Load(); n != 3 {
		t.Errorf("a ran %d barriers in 3 terms", n)
	}

	// Stopping the node revokes leadership.
	a.close()
	if !a.idle() {
		t.Fatalf("after stop: %s", a.state())
	}
}

// TestLeadership_NothingStartsBeforeBarrier: a new leader starts no task and
// does not answer reads as leader until its Barrier succeeds; a failed
// Barrier is retried.
func TestLeadership_NothingStartsBeforeBarrier(t *testing.T) {
	gate := make(chan struct{})
	o := startFakeOrch(t, "a", func(n int32) error {
		if n == 1 {
			return errors.New("barrier: timed out")
		}
		<-gate
		return nil
	})
	o.store.ch <- true
	waitState(t, "second barrier attempt", func() bool { return o.store.barriers.Load() == 2 }, o)
	if !o.idle() || o.reconciler.starts.Load() != 0 || o.bridge.starts.Load() != 0 {
		t.Fatalf("started before its barrier succeeded: %s", o.state())
	}
	close(gate)
	waitState(t, "leads after its barrier", o.leading, o)
}

// TestLeadership_LostDuringBarrier: a term whose Barrier keeps failing
// until leadership is lost starts nothing; the next term runs its own.
func TestLeadership_LostDuringBarrier(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	o := startFakeOrch(t, "a", func(int32) error {
		if failing.Load() {
			return errors.New("barrier: leadership lost while committing log")
		}
		return nil
	})
	o.store.ch <- true
	waitState(t, "first barrier attempt", func() bool { return o.store.barriers.Load() >= 1 }, o)
	o.store.ch <- false
	o.store.ch <- true // received only once the first term is revoked
	failing.Store(false)
	waitState(t, "leads in the next term", o.leading, o)
	if n := o.reconciler.starts.Load(); n != 1 {
		t.Errorf("reconciler started %d times; the lost term must start none", n)
	}
}
