package simnet

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// pipe is one direction of a stream: a buffer the writer appends to and
// the reader drains. Writes never wait for the reader (streams carry
// memberlist's bounded push-pull exchanges, not bulk data).
type pipe struct {
	mu     sync.Mutex
	buf    []byte        // guarded by mu
	eof    bool          // guarded by mu; the writer closed
	err    error         // guarded by mu; the stream broke
	notify chan struct{} // cap 1: buf, eof or err changed
}

func newPipe() *pipe { return &pipe{notify: make(chan struct{}, 1)} }

func (p *pipe) signal() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// conn is one end of a stream between two Transports.
type conn struct {
	local, remote *Transport
	r, w          *pipe
	peer          *conn

	mu            sync.Mutex
	readDeadline  time.Time // guarded by mu
	writeDeadline time.Time // guarded by mu
	closed        bool      // guarded by mu
}

var _ net.Conn = (*conn)(nil)

// newConnPair returns the dialer's end and the listener's end.
func newConnPair(from, to *Transport) (*conn, *conn) {
	ab, ba := newPipe(), newPipe()
	a := &conn{local: from, remote: to, r: ba, w: ab}
	b := &conn{local: to, remote: from, r: ab, w: ba}
	a.peer, b.peer = b, a
	return a, b
}

// breakPair fails both ends with err: pending and later reads and writes
// return it.
func (c *conn) breakPair(err error) {
	for _, p := range []*pipe{c.r, c.w} {
		p.mu.Lock()
		if p.err == nil {
			p.err = err
		}
		p.mu.Unlock()
		p.signal()
	}
}

func (c *conn) Read(b []byte) (int, error) {
	for {
		c.mu.Lock()
		closed, dl := c.closed, c.readDeadline
		c.mu.Unlock()
		if closed {
			return 0, net.ErrClosed
		}
		p := c.r
		p.mu.Lock()
		switch {
		case p.err != nil:
			err := p.err
			p.mu.Unlock()
			return 0, err
		case len(p.buf) > 0:
			k := copy(b, p.buf)
			p.buf = p.buf[k:]
			if len(p.buf) == 0 {
				p.buf = nil
			}
			p.mu.Unlock()
			return k, nil
		case p.eof:
			p.mu.Unlock()
			return 0, io.EOF
		}
		p.mu.Unlock()
		if err := wait(p.notify, dl); err != nil {
			return 0, err
		}
	}
}

// wait waits for a signal on ch until the deadline dl (zero: none). The
// Read loop rechecks the deadline and the conn state after every wakeup,
// so SetReadDeadline and Close wake it through the same channel.
func wait(ch chan struct{}, dl time.Time) error {
	if dl.IsZero() {
		<-ch
		return nil
	}
	d := time.Until(dl)
	if d <= 0 {
		return os.ErrDeadlineExceeded
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return os.ErrDeadlineExceeded
	}
}

func (c *conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	closed, dl := c.closed, c.writeDeadline
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	if !dl.IsZero() && !time.Now().Before(dl) {
		return 0, os.ErrDeadlineExceeded
	}
	p := c.w
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		return 0, err
	}
	if p.eof {
		p.mu.Unlock()
		return 0, io.ErrClosedPipe
	}
	p.buf = append(p.buf, b...)
	p.mu.Unlock()
	p.signal()
	return len(b), nil
}

// Close ends this side: the peer reads what was written, then EOF; its
// writes fail. Close is idempotent.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.w.mu.Lock()
	c.w.eof = true
	c.w.mu.Unlock()
	c.w.signal()
	c.r.mu.Lock()
	c.r.eof = true // the peer's writes fail from now on
	c.r.mu.Unlock()
	c.r.signal() // wake our own blocked Read
	// Whichever end closes first takes the pair off the network's books.
	c.local.net.forget(c)
	c.local.net.forget(c.peer)
	return nil
}

func (c *conn) LocalAddr() net.Addr  { return c.local.tcp }
func (c *conn) RemoteAddr() net.Addr { return c.remote.tcp }

func (c *conn) SetDeadline(t time.Time) error {
	_ = c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	c.mu.Unlock()
	c.r.signal() // a blocked Read picks up the new deadline
	return nil
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
	return nil
}
