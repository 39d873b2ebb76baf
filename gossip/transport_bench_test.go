package gossip

import (
	"io"
	"log"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// BenchmarkTransport_Receive: what receiving one gossip-sized UDP packet
// (150 bytes, about an alive message with a desktop's tags) costs in
// allocation, memberlist's NetTransport side by side with CompactTransport
// in one run:
//
//	go test -run '^$' -bench Transport_Receive -benchmem ./gossip/
func BenchmarkTransport_Receive(b *testing.B) {
	quiet := log.New(io.Discard, "", 0)
	for _, tc := range []struct {
		name string
		bind func() (memberlist.Transport, int, error)
	}{
		{"memberlist.NetTransport", func() (memberlist.Transport, int, error) {
			nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, Logger: quiet})
			if err != nil {
				return nil, 0, err
			}
			return nt, nt.GetAutoBindPort(), nil
		}},
		{"CompactTransport", func() (memberlist.Transport, int, error) {
			ct, err := NewCompactTransport("127.0.0.1", 0, quiet)
			if err != nil {
				return nil, 0, err
			}
			return ct, ct.GetAutoBindPort(), nil
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tr, port, err := tc.bind()
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Shutdown()
			c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 150)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				// One packet in flight at a time: loopback UDP drops what
				// the socket buffer cannot hold, and a lost packet would
				// hang the loop.
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				select {
				case <-tr.PacketCh():
				case <-time.After(5 * time.Second):
					b.Fatal("packet lost")
				}
			}
		})
	}
}

// BenchmarkTransport_Send: what sending one gossip-sized UDP packet to a
// member's IP:port costs, memberlist's NetTransport (which resolves the
// address for every packet) side by side with CompactTransport:
//
//	go test -run '^$' -bench Transport_Send -benchmem ./gossip/
func BenchmarkTransport_Send(b *testing.B) {
	quiet := log.New(io.Discard, "", 0)
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() { // drain, so that the sends are not dropped unread
		buf := make([]byte, 65536)
		for {
			if _, _, err := sink.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	to := memberlist.Address{Addr: sink.LocalAddr().String(), Name: "sink"}
	for _, tc := range []struct {
		name string
		bind func() (memberlist.NodeAwareTransport, error)
	}{
		{"memberlist.NetTransport", func() (memberlist.NodeAwareTransport, error) {
			return memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, Logger: quiet})
		}},
		{"CompactTransport", func() (memberlist.NodeAwareTransport, error) {
			return NewCompactTransport("127.0.0.1", 0, quiet)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tr, err := tc.bind()
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Shutdown()
			msg := make([]byte, 150)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tr.WriteToAddress(msg, to); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
