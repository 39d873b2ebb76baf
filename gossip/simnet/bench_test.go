package simnet

import (
	"testing"
	"time"
)

// BenchmarkNetwork_Send is the cost of one packet through the network, from
// WriteTo to the receiver's queue, without and with a delay (the delayed
// case goes through the scheduler's heap).
func BenchmarkNetwork_Send(b *testing.B) {
	for _, bc := range []struct {
		name string
		link Link
	}{
		{"direct", Link{}},
		{"latency", Link{Latency: time.Millisecond}},
		{"jitter+loss", Link{Latency: time.Millisecond, Jitter: time.Millisecond, Loss: 0.01}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Default = bc.link
			cfg.PacketQueue = 1 << 16
			n := newNet(b, cfg)
			ts := newNodes(b, n, "a", "b")
			done := make(chan struct{})
			go func() { // the receiver
				defer close(done)
				for {
					select {
					case <-ts[1].PacketCh():
					case <-ts[1].shutdown:
						return
					}
				}
			}()
			msg := make([]byte, 200) // a typical memberlist ping or gossip packet
			to := ts[1].Addr()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := ts[0].WriteTo(msg, to); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			_ = ts[1].Shutdown()
			<-done
		})
	}
}
