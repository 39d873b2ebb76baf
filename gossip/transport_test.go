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

// TestCompactTransport_PacketsHoldOnlyTheirBytes: a packet handed to
// memberlist holds a buffer of its own size (NetTransport hands out 64 KiB
// read buffers), and the next packet, read into the same read buffer, does
// not overwrite it; Shutdown returns while a packet waits unread (serf
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
	first, second := bytes.Repeat([]byte("a"), 100), bytes.Repeat([]byte("b"), 300)
	var got [][]byte
	for _, msg := range [][]byte{first, second} {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-tr.PacketCh():
			if p.From.String() != c.LocalAddr().String() {
				t.Errorf("packet from %s, sent from %s", p.From, c.LocalAddr())
			}
			got = append(got, p.Buf)
		case <-time.After(10 * time.Second):
			t.Fatal("no packet within 10 s")
		}
	}
	if !bytes.Equal(got[0], first) || cap(got[0]) != len(first) {
		t.Errorf("first packet: %d bytes (%.10q…) in a buffer of %d after the second was read; want the 100 bytes sent in a buffer of 100",
			len(got[0]), got[0], cap(got[0]))
	}
	if !bytes.Equal(got[1], second) || cap(got[1]) != len(second) {
		t.Errorf("second packet: %d bytes in a buffer of %d; want the 300 sent in a buffer of 300", len(got[1]), cap(got[1]))
	}
	// One more that nobody reads: the reader takes it from the socket
	// (the kernel's receive queue empties) and waits to hand it over.
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, "the transport to read the packet", func() (bool, string) {
		q, ok := udpRxQueue(t, port)
		return ok && q == 0, "receive queue " + strconv.Itoa(q)
	})
	done := make(chan error, 1)
	go func() { done <- tr.Shutdown() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown hung with a packet unread")
	}
	if err := tr.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
		t.Error("the TCP port still accepts after Shutdown")
	}
}

// TestCompactTransport_TwoTransportsTalk: what memberlist needs of a
// transport, between two of them over loopback: a packet written to the
// other's address arrives from the writer's port, a stream dialled to it
// is delivered and carries bytes both ways, and the advertised address is
// the one bound (or the one given).
func TestCompactTransport_TwoTransportsTalk(t *testing.T) {
	a, err := NewCompactTransport("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	b, err := NewCompactTransport("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	bAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.GetAutoBindPort()))

	// An IP:port (every member's address) and a host name both reach b.
	for _, to := range []string{bAddr, net.JoinHostPort("localhost", strconv.Itoa(b.GetAutoBindPort()))} {
		if _, err := a.WriteTo([]byte("ping"), to); err != nil {
			t.Fatalf("to %s: %v", to, err)
		}
		select {
		case p := <-b.PacketCh():
			if string(p.Buf) != "ping" || p.From.(*net.UDPAddr).Port != a.GetAutoBindPort() {
				t.Errorf("to %s: got %q from %s; want \"ping\" from port %d", to, p.Buf, p.From, a.GetAutoBindPort())
			}
			if p.Timestamp.IsZero() {
				t.Error("packet without a receive time")
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("to %s: no packet within 10 s", to)
		}
	}
	if _, err := a.WriteTo([]byte("ping"), "127.0.0.1"); err == nil {
		t.Error("a send to an address without a port reported no error")
	}

	out, err := a.DialTimeout(bAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var in net.Conn
	select {
	case in = <-b.StreamCh():
	case <-time.After(10 * time.Second):
		t.Fatal("no stream within 10 s")
	}
	defer in.Close()
	if _, err := out.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(in, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("stream read %q, %v; want \"hello\"", buf, err)
	}

	ip, port, err := b.FinalAdvertiseAddr("", 0)
	if err != nil || !ip.Equal(net.ParseIP("127.0.0.1")) || port != b.GetAutoBindPort() {
		t.Errorf("advertise %s:%d, %v; want the bound 127.0.0.1:%d", ip, port, err, b.GetAutoBindPort())
	}
	ip, port, err = b.FinalAdvertiseAddr("127.0.0.9", 7946)
	if err != nil || !ip.Equal(net.ParseIP("127.0.0.9")) || port != 7946 {
		t.Errorf("advertise %s:%d, %v; want the given 127.0.0.9:7946", ip, port, err)
	}
	if _, _, err := b.FinalAdvertiseAddr("desktop-7", 7946); err == nil {
		t.Error("advertising a name that is not an IP address was taken")
	}
}

// TestCompactTransport_RefusesABadOrTakenAddress: a bind address that is
// not an IP, and a port already in use, are errors that say so.
func TestCompactTransport_RefusesABadOrTakenAddress(t *testing.T) {
	if _, err := NewCompactTransport("desktop-7", 0, log.New(io.Discard, "", 0)); err == nil ||
		!strings.Contains(err.Error(), "not an IP address") {
		t.Errorf("bind to a name: %v; want an error saying it is not an IP address", err)
	}
	a, err := NewCompactTransport("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	if _, err := NewCompactTransport("127.0.0.1", a.GetAutoBindPort(), log.New(io.Discard, "", 0)); err == nil ||
		!strings.Contains(err.Error(), "address already in use") {
		t.Errorf("bind to a taken port: %v; want address already in use", err)
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
