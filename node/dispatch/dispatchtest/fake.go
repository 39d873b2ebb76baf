package dispatchtest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/node/dispatch"
)

// FakeBroker is an in-memory broker with RabbitMQ's semantics as far as
// the bridge uses them: durable queues on the default exchange, manual
// acks with prefetch, redelivery of unacked messages when a connection
// drops, and unroutable publishes silently dropped.
type FakeBroker struct {
	mu sync.Mutex
	// All fields below are guarded by mu.
	queues map[string]*fakeQueue
	conns  map[*fakeConn]bool
	wake   chan struct{} // closed and replaced on every change
	down   bool
	dials  int
}

type fakeQueue struct {
	ready    []fakeMsg
	conflict bool
}

type fakeMsg struct {
	m           dispatch.Message
	redelivered bool
}

// NewFakeBroker returns an empty broker.
func NewFakeBroker() *FakeBroker {
	return &FakeBroker{queues: map[string]*fakeQueue{}, conns: map[*fakeConn]bool{}, wake: make(chan struct{})}
}

func (b *FakeBroker) changedLocked() {
	close(b.wake)
	b.wake = make(chan struct{})
}

// Dial implements dispatch.Dialer.
func (b *FakeBroker) Dial(ctx context.Context, url string) (dispatch.Conn, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dials++
	if b.down {
		return nil, errors.New("fake broker: connection refused")
	}
	c := &fakeConn{b: b, done: make(chan struct{})}
	b.conns[c] = true
	return c, nil
}

// Dials counts connection attempts.
func (b *FakeBroker) Dials() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dials
}

// SetDown drops every connection (their unacked messages go back to their
// queues, marked redelivered) and, while down, refuses new ones.
func (b *FakeBroker) SetDown(down bool) {
	b.mu.Lock()
	b.down = down
	var conns []*fakeConn
	if down {
		for c := range b.conns {
			conns = append(conns, c)
		}
	}
	b.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// DeclareConflicting creates a queue that the bridge's declaration clashes
// with, as an existing non-durable queue would.
func (b *FakeBroker) DeclareConflicting(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queues[name] = &fakeQueue{conflict: true}
}

// Declare creates a queue, as a consumer of replies would.
func (b *FakeBroker) Declare(queue string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.queues[queue] == nil {
		b.queues[queue] = &fakeQueue{}
	}
}

// Publish puts a message on a queue (creating it), as a producer would.
func (b *FakeBroker) Publish(queue string, m dispatch.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[queue]
	if q == nil {
		q = &fakeQueue{}
		b.queues[queue] = q
	}
	q.ready = append(q.ready, fakeMsg{m: m})
	b.changedLocked()
}

// Messages returns a copy of the ready messages of a queue.
func (b *FakeBroker) Messages(queue string) []dispatch.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[queue]
	if q == nil {
		return nil
	}
	out := make([]dispatch.Message, len(q.ready))
	for i, m := range q.ready {
		out[i] = m.m
	}
	return out
}

// WaitMessages polls until queue holds at least n ready messages or the
// timeout passes, and returns them.
func (b *FakeBroker) WaitMessages(queue string, n int, timeout time.Duration) []dispatch.Message {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		wake := b.wake
		b.mu.Unlock()
		if ms := b.Messages(queue); len(ms) >= n {
			return ms
		}
		select {
		case <-wake:
		case <-deadline.C:
			return b.Messages(queue)
		}
	}
}

type fakeConn struct {
	b    *FakeBroker
	done chan struct{}
	once sync.Once
	// chans is guarded by b.mu.
	chans []*fakeChannel
}

func (c *fakeConn) Done() <-chan struct{} { return c.done }

func (c *fakeConn) Close() error {
	c.once.Do(func() {
		b := c.b
		b.mu.Lock()
		delete(b.conns, c)
		for _, ch := range c.chans {
			ch.closeLocked()
		}
		b.changedLocked()
		b.mu.Unlock()
		close(c.done)
	})
	return nil
}

func (c *fakeConn) Channel() (dispatch.Channel, error) {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-c.done:
		return nil, errors.New("fake broker: connection closed")
	default:
	}
	ch := &fakeChannel{c: c, stop: make(chan struct{})}
	c.chans = append(c.chans, ch)
	return ch, nil
}

type fakeChannel struct {
	c    *fakeConn
	stop chan struct{}
	// closed, unacked and queue are guarded by the broker's mu.
	closed  bool
	queue   string
	unacked map[*fakeAcker]fakeMsg
}

// closeLocked requeues the unacked messages at the head of their queue.
func (ch *fakeChannel) closeLocked() {
	if ch.closed {
		return
	}
	ch.closed = true
	close(ch.stop)
	if q := ch.c.b.queues[ch.queue]; q != nil {
		var back []fakeMsg
		for _, m := range ch.unacked {
			m.redelivered = true
			back = append(back, m)
		}
		q.ready = append(back, q.ready...)
	}
	ch.unacked = nil
}

func (ch *fakeChannel) DeclareQueue(name string) error {
	b := ch.c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[name]
	if q != nil && q.conflict {
		return dispatch.ErrQueueConflict
	}
	if q == nil {
		b.queues[name] = &fakeQueue{}
	}
	return nil
}

func (ch *fakeChannel) Consume(queue string, prefetch int) (<-chan dispatch.Delivery, error) {
	b := ch.c.b
	b.mu.Lock()
	ch.queue = queue
	ch.unacked = map[*fakeAcker]fakeMsg{}
	b.mu.Unlock()
	out := make(chan dispatch.Delivery)
	go func() {
		defer close(out)
		for {
			b.mu.Lock()
			if ch.closed {
				b.mu.Unlock()
				return
			}
			q := b.queues[queue]
			var (
				d    dispatch.Delivery
				have bool
			)
			if q != nil && len(q.ready) > 0 && len(ch.unacked) < prefetch {
				m := q.ready[0]
				q.ready = q.ready[1:]
				a := &fakeAcker{ch: ch}
				ch.unacked[a] = m
				d, have = dispatch.Delivery{Message: m.m, Redelivered: m.redelivered, Acker: a}, true
			}
			wake := b.wake
			b.mu.Unlock()
			if have {
				select {
				case out <- d:
				case <-ch.stop:
					return
				}
				continue
			}
			select {
			case <-wake:
			case <-ch.stop:
				return
			}
		}
	}()
	return out, nil
}

func (ch *fakeChannel) Publish(ctx context.Context, queue string, m dispatch.Message) error {
	b := ch.c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if ch.closed {
		return errors.New("fake broker: channel closed")
	}
	if q := b.queues[queue]; q != nil { // unroutable: dropped, yet confirmed
		q.ready = append(q.ready, fakeMsg{m: m})
		b.changedLocked()
	}
	return nil
}

func (ch *fakeChannel) Close() error {
	b := ch.c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	ch.closeLocked()
	b.changedLocked()
	return nil
}

type fakeAcker struct{ ch *fakeChannel }

func (a *fakeAcker) settle(requeue bool) error {
	b := a.ch.c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	m, ok := a.ch.unacked[a]
	if !ok || a.ch.closed {
		return errors.New("fake broker: unknown delivery tag (channel closed?)")
	}
	delete(a.ch.unacked, a)
	if requeue {
		m.redelivered = true
		q := b.queues[a.ch.queue]
		q.ready = append([]fakeMsg{m}, q.ready...)
	}
	b.changedLocked()
	return nil
}

func (a *fakeAcker) Ack() error              { return a.settle(false) }
func (a *fakeAcker) Nack(requeue bool) error { return a.settle(requeue) }

var (
	_ dispatch.Conn    = (*fakeConn)(nil)
	_ dispatch.Channel = (*fakeChannel)(nil)
	_ dispatch.Acker   = (*fakeAcker)(nil)
)

// Store is an in-memory registry that applies commands at once, as a
// single-node raft would: a dispatch.Store for tests.
type Store struct {
	mu    sync.Mutex
	fsm   *consensus.FSM
	index uint64 // guarded by mu
	// fail, when set, makes Apply fail with it; guarded by mu.
	fail error
}

// SetFailApply makes Apply fail with err (nil: succeed again), as a lost
// leadership would.
func (s *Store) SetFailApply(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{fsm: consensus.NewFSM()} }

var _ dispatch.Store = (*Store)(nil)

// Apply encodes, decodes and applies cmd to the FSM.
func (s *Store) Apply(cmd consensus.Command, _ time.Duration) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	b, err := consensus.EncodeCommand(cmd)
	if err != nil {
		return 0, err
	}
	s.index++
	s.fsm.Apply(&raft.Log{Index: s.index, Term: 1, Type: raft.LogCommand, Data: b})
	return s.index, nil
}

// FSM returns the registry.
func (s *Store) FSM() *consensus.FSM { return s.fsm }
