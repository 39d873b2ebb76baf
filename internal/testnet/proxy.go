// Package testnet holds network fakes for tests over real sockets.
package testnet

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy relays TCP connections from a loopback listener to a backend until
// it is blackholed: then it still accepts connections and takes bytes but
// delivers nothing either way, as a network that drops packets does —
// nothing is refused and nothing answers. Tests use it for a leader's API
// behind a partition, or a desktop the leader cannot reach.
type Proxy struct {
	ln      net.Listener
	backend string
	hole    atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{} // open connections, both sides; guarded by mu
	closed  bool                  // guarded by mu
}

// NewProxy relays 127.0.0.1:0 to backend until the test ends.
func NewProxy(t testing.TB, backend string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, backend: backend, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Blackhole starts (true) or ends (false) dropping everything.
func (p *Proxy) Blackhole(on bool) { p.hole.Store(on) }

// Conns is how many connections (both sides) the proxy holds open.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// track records c for close; false when the proxy is closing.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			in.Close()
			return
		}
		p.wg.Go(func() {
			out, err := net.Dial("tcp", p.backend)
			if err != nil || !p.track(out) {
				if out != nil {
					out.Close()
				}
				_, _ = io.Copy(io.Discard, in) // as if it went nowhere
				return
			}
			p.wg.Go(func() { p.pipe(out, in) })
			p.pipe(in, out)
		})
	}
}

// pipe copies src to dst while the proxy relays, and drops what src sends
// while it is blackholed.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.hole.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !p.hole.Load() {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
