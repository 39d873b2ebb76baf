package gossip

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	metrics "github.com/hashicorp/go-metrics/compat"
	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// CompactTransport is the transport a node gossips on when
// Config.Transport is nil: UDP packets and TCP streams on one address and
// port, as memberlist's NetTransport, except for how a packet is read.
//
// NetTransport reads every UDP packet into a fresh 64 KiB buffer and hands
// memberlist a slice of it. That is one 64 KiB allocation per packet
// received — two thirds of everything a 500-desktop simulation allocated,
// and so most of its garbage collections (docs/PERFORMANCE.md) — and
// memberlist queues alive, suspect and dead messages (up to
// HandoffQueueDepth, 1,024) still pointing into those buffers, so a node
// that falls behind (a desktop whose owner took the CPU, a join storm) held
// up to 64 MiB of buffers for ~1.4 MiB of messages. CompactTransport reads
// into one buffer it keeps and hands memberlist a copy of the packet's own
// length.
type CompactTransport struct {
	tcp     *net.TCPListener
	udp     *net.UDPConn
	logger  *log.Logger
	packets chan *memberlist.Packet
	streams chan net.Conn
	stop    chan struct{} // Shutdown began
	closing atomic.Bool
	once    sync.Once
	wg      sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*CompactTransport)(nil)

const (
	// maxPacket is the largest UDP payload: what the read buffer holds.
	maxPacket = 65536
	// recvBuf is the socket receive buffer asked for (halved until the
	// kernel takes it), as memberlist asks: a burst of gossip waits there
	// while the reader is busy instead of being dropped.
	recvBuf = 2 << 20
)

// NewCompactTransport binds TCP and UDP on bindAddr:bindPort. For port 0
// TCP gets a port from the kernel and UDP takes the same one, retried a few
// times if UDP's is in use; GetAutoBindPort says which. Shutdown closes it.
func NewCompactTransport(bindAddr string, bindPort int, logger *log.Logger) (*CompactTransport, error) {
	ip := net.ParseIP(bindAddr)
	if ip == nil {
		return nil, fmt.Errorf("could not set up network transport: bind address %q is not an IP address", bindAddr)
	}
	tries := 1
	if bindPort == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var t *CompactTransport
		if t, err = bindCompact(ip, bindPort, logger); err == nil {
			return t, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, fmt.Errorf("could not set up network transport: %w", err)
}

func bindCompact(ip net.IP, port int, logger *log.Logger) (*CompactTransport, error) {
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, err
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		_ = tcp.Close()
		return nil, err
	}
	for size := recvBuf; size > 0; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	t := &CompactTransport{tcp: tcp, udp: udp, logger: logger, packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn), stop: make(chan struct{})}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t, nil
}

// GetAutoBindPort is the port bound (the kernel's pick for port 0).
func (t *CompactTransport) GetAutoBindPort() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr implements memberlist.Transport: the address given,
// else the one bound, else (bound to all addresses) a private IP of this
// host.
func (t *CompactTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("advertise address %q is not an IP address", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	a := t.tcp.Addr().(*net.TCPAddr).IP
	if a.IsUnspecified() {
		priv, err := sockaddr.GetPrivateIP()
		if err != nil {
			return nil, 0, fmt.Errorf("find a private IP address to advertise: %w", err)
		}
		if priv == "" {
			return nil, 0, errors.New("no private IP address found to advertise, and none given")
		}
		a = net.ParseIP(priv)
	}
	return a, t.GetAutoBindPort(), nil
}

// WriteTo implements memberlist.Transport.
func (t *CompactTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress implements memberlist.NodeAwareTransport.
// Members' addresses are IP:port literals, parsed without allocating
// (net.ResolveUDPAddr allocates a UDPAddr for each send); anything else
// (a host name) is resolved as memberlist's NetTransport does.
func (t *CompactTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	var err error
	if ap, perr := netip.ParseAddrPort(a.Addr); perr == nil {
		_, err = t.udp.WriteToUDPAddrPort(b, ap)
	} else {
		var to *net.UDPAddr
		if to, err = net.ResolveUDPAddr("udp", a.Addr); err != nil {
			return time.Time{}, err
		}
		_, err = t.udp.WriteTo(b, to)
	}
	// The time after the write: memberlist measures round trips from it.
	return time.Now(), err
}

// PacketCh implements memberlist.Transport: each packet in a buffer of its
// own size.
func (t *CompactTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout implements memberlist.Transport.
func (t *CompactTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *CompactTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", a.Addr)
}

// StreamCh implements memberlist.Transport.
func (t *CompactTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport: it closes both sockets and
// returns once nothing more is delivered, even if nobody reads (serf
// failed to start). It may be called more than once (memberlist's
// shutdown, and Start's clean-up when serf fails).
func (t *CompactTransport) Shutdown() error {
	t.once.Do(func() {
		t.closing.Store(true)
		close(t.stop)
		_ = t.tcp.Close()
		_ = t.udp.Close()
		t.wg.Wait()
	})
	return nil
}

func (t *CompactTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, from, err := t.udp.ReadFrom(buf)
		now := time.Now() // when it arrived, before any wait to hand it over
		if err != nil {
			if t.closing.Load() {
				return
			}
			t.logger.Printf("[ERR] memberlist: Error reading UDP packet: %v", err)
			continue
		}
		if n < 1 { // memberlist needs a message type byte
			t.logger.Printf("[ERR] memberlist: UDP packet too short (%d bytes) %s", n, memberlist.LogAddress(from))
			continue
		}
		metrics.IncrCounter([]string{"memberlist", "udp", "received"}, float32(n))
		own := make([]byte, n)
		copy(own, buf)
		p := &memberlist.Packet{Buf: own, From: from, Timestamp: now}
		select {
		case t.packets <- p:
		case <-t.stop:
			return
		}
	}
}

func (t *CompactTransport) acceptStreams() {
	defer t.wg.Done()
	const minDelay, maxDelay = 5 * time.Millisecond, time.Second
	var delay time.Duration
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closing.Load() {
				return
			}
			// Out of file descriptors, say: wait, longer each time, so
			// a failing accept does not spin.
			delay = min(max(2*delay, minDelay), maxDelay)
			t.logger.Printf("[ERR] memberlist: Error accepting TCP connection: %v (retrying in %s)", err, delay)
			select {
			case <-time.After(delay):
			case <-t.stop:
				return
			}
			continue
		}
		delay = 0
		metrics.IncrCounter([]string{"memberlist", "tcp", "accept"}, 1)
		select {
		case t.streams <- c:
		case <-t.stop:
			_ = c.Close()
			return
		}
	}
}
