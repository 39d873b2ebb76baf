package simnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// draw decides one packet's fate on link l: its delay in simulated time,
// or that it is lost.
func (t *Transport) draw(l *Link) (delay time.Duration, lost bool) {
	if l.Loss == 0 && l.Jitter == 0 && l.Reorder == 0 {
		return l.Latency, false
	}
	t.rngMu.Lock()
	defer t.rngMu.Unlock()
	if l.Loss > 0 && t.rng.Float64() < l.Loss {
		return 0, true
	}
	delay = l.Latency
	if l.Jitter > 0 {
		delay += time.Duration(t.rng.Int64N(int64(l.Jitter)))
	}
	if l.Reorder > 0 && t.rng.Float64() < l.Reorder {
		rd := l.ReorderDelay
		if rd == 0 {
			rd = max(l.Latency, time.Millisecond)
		}
		delay += rd
	}
	return delay, false
}

// Transport is one node's memberlist.Transport on a Network. Set it as
// memberlist.Config.Transport (with the Config's BindAddr and BindPort left
// alone: the Transport has its own address).
type Transport struct {
	net      *Network
	name     string
	addr     string // "ip:port", the key in Network.byAddr
	udp      *net.UDPAddr
	tcp      *net.TCPAddr
	packetCh chan *memberlist.Packet // never closed: the scheduler may still hold a reference
	streamCh chan net.Conn           // never closed, for the same reason

	rngMu sync.Mutex
	rng   *rand.Rand // guarded by rngMu

	isShutdown atomic.Bool
	shutdown   chan struct{} // closed by Shutdown
	once       sync.Once
}

var _ memberlist.Transport = (*Transport)(nil)

// Name is the node name given to NewTransport.
func (t *Transport) Name() string { return t.name }

// Addr is the node's address, "10.x.y.z:7946".
func (t *Transport) Addr() string { return t.addr }

// FinalAdvertiseAddr returns the Transport's own address whatever memberlist
// asks for: the simulated network has no other.
func (t *Transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.udp.IP, t.udp.Port, nil
}

// WriteTo sends a packet. Like UDP it never waits for the receiver: a
// packet that is lost, cut or finds the receiver's queue full is dropped.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.isShutdown.Load() {
		return time.Time{}, ErrClosed
	}
	return time.Now(), t.net.send(t, b, addr)
}

// PacketCh delivers the packets sent to this node.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// StreamCh delivers the streams other nodes dial to this one.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streamCh }

// DialTimeout opens a stream to addr. It takes one simulated round trip of
// the link, fails with ErrPartitioned across a cut and with ErrNoRoute when
// no live node has addr, and waits at most timeout for the other node to
// have room for it on its StreamCh.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.isShutdown.Load() {
		return nil, ErrClosed
	}
	n := t.net
	n.mu.RLock()
	to, ok := n.byAddr[addr]
	var rtt time.Duration
	var err error
	switch {
	case n.closed:
		err = ErrClosed
	case !ok:
		err = ErrNoRoute
	case n.cutLocked(t.name, to.name):
		err = ErrPartitioned
	default:
		there, ok := n.links[linkKey{t.name, to.name}]
		if !ok {
			there = n.def
		}
		back, ok := n.links[linkKey{to.name, t.name}]
		if !ok {
			back = n.def
		}
		rtt = n.wall(there.Latency + back.Latency)
	}
	n.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	var deadline <-chan time.Time
	if timeout > 0 {
		if rtt > timeout {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: to.tcp, Err: errTimeout{}}
		}
		tm := time.NewTimer(timeout - rtt)
		defer tm.Stop()
		deadline = tm.C
	}
	if rtt > 0 {
		tm := time.NewTimer(rtt)
		select {
		case <-tm.C:
		case <-t.shutdown:
			tm.Stop()
			return nil, ErrClosed
		}
	}
	local, remote := newConnPair(t, to)
	// Register before handing over, so that a cut or a shutdown from now
	// on breaks the pair; recheck what may have changed during the RTT.
	n.mu.RLock()
	switch {
	case n.closed || to.isShutdown.Load() || t.isShutdown.Load():
		err = ErrNoRoute
	case n.cutLocked(t.name, to.name):
		err = ErrPartitioned
	default:
		n.cmu.Lock()
		n.conns[local] = struct{}{}
		n.cmu.Unlock()
	}
	n.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	select {
	case to.streamCh <- remote:
		return local, nil
	case <-deadline:
		err = &net.OpError{Op: "dial", Net: "tcp", Addr: to.tcp, Err: errTimeout{}}
	case <-to.shutdown:
		err = fmt.Errorf("dial %s: %w", addr, ErrNoRoute)
	case <-t.shutdown:
		err = ErrClosed
	}
	n.forget(local)
	local.breakPair(err)
	return nil, err
}

// Shutdown takes the node off the network at once, as a crash would: no
// more packets or streams reach it, its open streams break, and its
// queued packets are never read by anyone. It is idempotent.
func (t *Transport) Shutdown() error {
	t.once.Do(func() {
		n := t.net
		n.mu.Lock()
		t.isShutdown.Store(true)
		close(t.shutdown)
		if n.byAddr[t.addr] == t {
			delete(n.byAddr, t.addr)
		}
		if n.byName[t.name] == t {
			delete(n.byName, t.name)
		}
		n.cmu.Lock()
		for c := range n.conns {
			if c.local == t || c.remote == t {
				delete(n.conns, c)
				c.breakPair(ErrClosed)
			}
		}
		n.cmu.Unlock()
		n.mu.Unlock()
		// Drain streams nobody will accept, so their dialers see EOF.
		for {
			select {
			case c := <-t.streamCh:
				_ = c.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (n *Network) forget(c *conn) {
	n.cmu.Lock()
	delete(n.conns, c)
	n.cmu.Unlock()
}

// errTimeout is a net.Error that says it is a timeout, as memberlist and
// net/http expect of dial and deadline failures.
type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

var _ net.Error = errTimeout{}
