package gossip

import (
	"fmt"
	"log"
	"strings"
	"sync"

	"github.com/hashicorp/memberlist"
)

// CompactTransport is the transport a node gossips on when
// Config.Transport is nil: memberlist's own UDP/TCP transport, except that
// a packet handed to memberlist holds only its own bytes. NetTransport
// reads every UDP packet into a fresh 64 KiB buffer and hands memberlist a
// slice of it, and memberlist queues alive, suspect and dead messages (up
// to HandoffQueueDepth, 1,024) still pointing into that buffer, so a node
// that falls behind — a desktop whose owner took the CPU, a join storm, a
// simulator short of CPU — holds up to 64 MiB of buffers for ~1.4 MiB of
// messages. Copying each packet into a slice of its own length costs one
// small allocation and a goroutine hand-off; a 1,000-desktop simulation
// on loopback sockets held 4.3 GB at 700 desktops instead of 6.6
// (docs/PERFORMANCE.md). NetTransport still allocates the 64 KiB per
// packet; only its retention is gone.
type CompactTransport struct {
	*memberlist.NetTransport
	packets chan *memberlist.Packet
	stop    chan struct{} // Shutdown began: stop delivering, drain
	down    chan struct{} // NetTransport is shut down: nothing more comes
	once    sync.Once
	wg      sync.WaitGroup
}

// NewCompactTransport binds memberlist's NetTransport on bindAddr:bindPort
// as memberlist would (for port 0 a port the kernel picks, with a few
// retries: TCP and UDP must both get it; GetAutoBindPort says which) and
// starts copying its packets. Shutdown closes it.
func NewCompactTransport(bindAddr string, bindPort int, logger *log.Logger) (*CompactTransport, error) {
	nc := &memberlist.NetTransportConfig{BindAddrs: []string{bindAddr}, BindPort: bindPort, Logger: logger}
	tries := 1
	if bindPort == 0 {
		tries = 10
	}
	var nt *memberlist.NetTransport
	var err error
	for range tries {
		if nt, err = memberlist.NewNetTransport(nc); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("could not set up network transport: %w", err)
	}
	t := &CompactTransport{NetTransport: nt, packets: make(chan *memberlist.Packet), stop: make(chan struct{}),
		down: make(chan struct{})}
	t.wg.Add(1)
	go t.copyPackets()
	return t, nil
}

func (t *CompactTransport) copyPackets() {
	defer t.wg.Done()
	in := t.NetTransport.PacketCh()
	for {
		select {
		case p := <-in:
			buf := make([]byte, len(p.Buf))
			copy(buf, p.Buf)
			p.Buf = buf
			select {
			case t.packets <- p:
			case <-t.stop:
			}
		case <-t.stop:
			// NetTransport's Shutdown waits for its UDP readers, which
			// may be blocked handing over a packet: take them until it
			// is down (memberlist stops reading first when serf fails
			// to start).
			for {
				select {
				case <-in:
				case <-t.down:
					return
				}
			}
		}
	}
}

// PacketCh implements memberlist.Transport: packets in buffers of their
// own size.
func (t *CompactTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// Shutdown implements memberlist.Transport; it may be called more than
// once (memberlist's shutdown, and Start's clean-up when serf fails).
func (t *CompactTransport) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.stop)
		err = t.NetTransport.Shutdown()
		close(t.down)
		t.wg.Wait()
	})
	return err
}
