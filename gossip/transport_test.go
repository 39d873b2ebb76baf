//go:build linux

package gossip

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// TestCompactTransport_PacketsHoldOnlyTheirBytes: a packet queued in
// memberlist holds a buffer of its own size, not NetTransport's 64 KiB
// read buffer; and Shutdown returns while a packet waits unread (serf
// failed to start: nobody reads), and again.
func TestCompactTransport_PacketsHoldOnlyTheirBytes(t *testing.T) {
	tr, err := NewCompactTransport("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	port := tr.GetAutoBindPort()
	if port == 0 {
		t.Fatal("no port bound")
	}
	c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("a"), 100)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-tr.PacketCh():
		if !bytes.Equal(p.Buf, msg) || cap(p.Buf) != len(msg) {
			t.Fatalf("packet of %d bytes in a buffer of %d (NetTransport reads into 65,536); want the 100 bytes sent in a buffer of 100",
				len(p.Buf), cap(p.Buf))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no packet within 10 s")
	}
	// Two more that nobody reads: one held by the copier, one by
	// NetTransport's reader.
	for range 2 {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	// Both read from the socket: one waits in the copier, one in
	// NetTransport's reader (the kernel's receive queue is empty).
	testwait.Until(t, 10*time.Second, "the transport to read both packets", func() (bool, string) {
		q, ok := udpRxQueue(t, port)
		return ok && q == 0, "receive queue " + strconv.Itoa(q)
	})
	done := make(chan error, 1)
	go func() { done <- tr.Shutdown() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown hung with packets unread")
	}
	if err := tr.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

// udpRxQueue is the bytes waiting in the receive queue of the UDP socket
// bound to 127.0.0.1:port (/proc/net/udp).
func udpRxQueue(t *testing.T, port int) (int, bool) {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatalf("read /proc/net/udp: %v", err)
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) > 4 && f[1] == want {
			_, rx, _ := strings.Cut(f[4], ":")
			n, err := strconv.ParseInt(rx, 16, 64)
			return int(n), err == nil
		}
	}
	return 0, false
}
