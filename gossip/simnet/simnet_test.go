package simnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testwait"
)

func newNet(tb testing.TB, cfg Config) *Network {
	tb.Helper()
	n, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = n.Close() })
	return n
}

func newNodes(tb testing.TB, n *Network, names ...string) []*Transport {
	tb.Helper()
	ts := make([]*Transport, len(names))
	for i, name := range names {
		t, err := n.NewTransport(name)
		if err != nil {
			tb.Fatal(err)
		}
		ts[i] = t
	}
	return ts
}

func seqPacket(i uint32) []byte { return binary.BigEndian.AppendUint32(nil, i) }

// recv reads k packets from t, failing after timeout.
func recv(tb testing.TB, t *Transport, k int, timeout time.Duration) []uint32 {
	tb.Helper()
	got := make([]uint32, 0, k)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for len(got) < k {
		select {
		case p := <-t.PacketCh():
			got = append(got, binary.BigEndian.Uint32(p.Buf))
		case <-deadline.C:
			tb.Fatalf("received %d of %d packets in %s", len(got), k, timeout)
		}
	}
	return got
}

func TestNetwork_DeliversInOrderWithoutLoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		link Link
	}{
		{"no delay", Link{}},
		{"latency", Link{Latency: 20 * time.Millisecond}},
		{"bandwidth", Link{Latency: time.Millisecond, Bandwidth: 1 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Default = tc.link
			cfg.TimeScale = 4
			n := newNet(t, cfg)
			ts := newNodes(t, n, "a", "b")
			const k = 500
			start := time.Now()
			for i := range uint32(k) {
				if _, err := ts[0].WriteTo(seqPacket(i), ts[1].Addr()); err != nil {
					t.Fatal(err)
				}
			}
			got := recv(t, ts[1], k, 10*time.Second)
			for i, v := range got {
				if v != uint32(i) {
					t.Fatalf("packet %d carried %d: out of order", i, v)
				}
			}
			// The last packet cannot arrive before the scaled latency.
			if min := n.wall(tc.link.Latency); time.Since(start) < min {
				t.Errorf("delivered in %s, before the scaled latency %s", time.Since(start), min)
			}
			// The counter moves just after the packet is on the queue the
			// receiver reads, so the last one may lag recv by a moment.
			testwait.Until(t, 5*time.Second, "stats of every packet sent and delivered", func() (bool, string) {
				s := n.Stats()
				return s.Delivered == k && s.Sent == k, fmt.Sprintf("%+v", s)
			})
		})
	}
}

func TestNetwork_ReorderLetsLaterPacketsOvertake(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Default = Link{Latency: 2 * time.Millisecond, Reorder: 0.3, ReorderDelay: 5 * time.Millisecond}
	n := newNet(t, cfg)
	ts := newNodes(t, n, "a", "b")
	const k = 300
	for i := range uint32(k) {
		_, _ = ts[0].WriteTo(seqPacket(i), ts[1].Addr())
	}
	got := recv(t, ts[1], k, 10*time.Second)
	inversions := 0
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			inversions++
		}
	}
	if inversions == 0 {
		t.Errorf("30%% of packets held back 5 ms yet none arrived out of order")
	}
}

func TestNetwork_LossRateWithinTolerance(t *testing.T) {
	for _, loss := range []float64{0.02, 0.2} {
		t.Run(fmt.Sprint(loss), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Seed = 42
			cfg.Default = Link{Loss: loss}
			cfg.PacketQueue = 20000
			n := newNet(t, cfg)
			ts := newNodes(t, n, "a", "b")
			const k = 20000
			for i := range uint32(k) {
				_, _ = ts[0].WriteTo(seqPacket(i), ts[1].Addr())
			}
			s := n.Stats()
			// Binomial: sd = sqrt(k p (1-p)) ≤ 57 packets; allow 5 sd.
			rate := float64(s.Lost) / k
			if tol := 0.015; rate < loss-tol || rate > loss+tol {
				t.Errorf("lost %.4f of packets, want %.2f ± %.3f", rate, loss, tol)
			}
			if got := len(ts[1].PacketCh()); uint64(got) != k-s.Lost {
				t.Errorf("received %d, want %d sent less %d lost", got, k, s.Lost)
			}
		})
	}
}

func TestNetwork_PartitionThenHeal(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Default = Link{Latency: time.Millisecond}
	n := newNet(t, cfg)
	ts := newNodes(t, n, "a1", "a2", "b1")
	n.Partition("A", "a1", "a2")
	n.Partition("B", "b1")
	// A stream open before the cut breaks when it comes.
	c, err := ts[0].DialTimeout(ts[2].Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv := <-ts[2].StreamCh()
	n.Cut("A", "B")
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrPartitioned) {
		t.Errorf("read on a cut stream: %v, want ErrPartitioned", err)
	}
	if _, err := srv.Write([]byte("x")); !errors.Is(err, ErrPartitioned) {
		t.Errorf("write on a cut stream: %v, want ErrPartitioned", err)
	}
	// Across the cut: packets dropped, dials refused; within a side: fine.
	_, _ = ts[0].WriteTo(seqPacket(1), ts[2].Addr())
	_, _ = ts[2].WriteTo(seqPacket(2), ts[0].Addr())
	_, _ = ts[0].WriteTo(seqPacket(3), ts[1].Addr())
	recv(t, ts[1], 1, 5*time.Second)
	if _, err := ts[0].DialTimeout(ts[2].Addr(), time.Second); !errors.Is(err, ErrPartitioned) {
		t.Errorf("dial across the cut: %v, want ErrPartitioned", err)
	}
	if s := n.Stats(); s.Cut != 2 {
		t.Errorf("stats %+v, want 2 packets cut", s)
	}
	if len(ts[0].PacketCh())+len(ts[2].PacketCh()) != 0 {
		t.Error("a packet crossed the cut")
	}
	if n.Reachable("a1", "b1") || n.Reachable("b1", "a2") || !n.Reachable("a1", "a2") {
		t.Error("Reachable disagrees with the cut")
	}

	n.Heal("A", "B")
	if !n.Reachable("a1", "b1") {
		t.Error("not Reachable after the heal")
	}
	_, _ = ts[0].WriteTo(seqPacket(4), ts[2].Addr())
	if got := recv(t, ts[2], 1, 5*time.Second); got[0] != 4 {
		t.Errorf("after heal got packet %d, want 4", got[0])
	}
	c, err = ts[2].DialTimeout(ts[0].Addr(), time.Second)
	if err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
	srv = <-ts[0].StreamCh()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if b, err := io.ReadAll(srv); err != nil || string(b) != "hello" {
		t.Errorf("stream after heal read %q, %v", b, err)
	}
}

func TestConn_ReadDeadline(t *testing.T) {
	n := newNet(t, DefaultConfig())
	ts := newNodes(t, n, "a", "b")
	c, err := ts[0].DialTimeout(ts[1].Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v, want a deadline error", err)
	}
}

// TestNetwork_FloodDoesNotBlock: 200 senders flood one receiver that
// reads slowly; no sender blocks, the receiver's queue overflows instead,
// and dials to a node that does not accept time out.
func TestNetwork_FloodDoesNotBlock(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Default = Link{Latency: time.Millisecond, Jitter: time.Millisecond}
	cfg.PacketQueue = 64
	cfg.StreamQueue = 4
	n := newNet(t, cfg)
	sink := newNodes(t, n, "sink")[0]
	stop := make(chan struct{})
	var readerDone sync.WaitGroup
	readerDone.Add(1)
	go func() { // the slow reader
		defer readerDone.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				select {
				case <-sink.PacketCh():
				default:
				}
			}
		}
	}()
	const senders, each = 200, 200
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for i := range senders {
		tr, err := n.NewTransport(fmt.Sprint("s", i))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range uint32(each) {
				if _, err := tr.WriteTo(seqPacket(j), sink.Addr()); err != nil {
					errs <- err
					return
				}
			}
			if i%20 == 0 { // nobody accepts streams: the dial times out
				if c, err := tr.DialTimeout(sink.Addr(), 50*time.Millisecond); err == nil {
					_ = c.Close()
				}
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatal("senders blocked on a slow receiver")
	}
	close(stop)
	readerDone.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	testwait.Until(t, 10*time.Second, "every packet accounted for", func() (bool, string) {
		s := n.Stats()
		return s.Delivered+s.Overflow == senders*each, fmt.Sprintf("%+v", s)
	})
	if s := n.Stats(); s.Overflow == 0 {
		t.Errorf("a 64-packet queue read once a millisecond took %d packets without overflow", s.Delivered)
	}
}

// TestNetwork_CloseReleasesEverything: after Close no goroutine of the
// network is left, and blocked readers and dialers return.
func TestNetwork_CloseReleasesEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	cfg := DefaultConfig()
	cfg.Default = Link{Latency: 50 * time.Millisecond}
	cfg.StreamQueue = 1
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := newNodes(t, n, "a", "b", "c")
	for i := range uint32(100) {
		_, _ = ts[0].WriteTo(seqPacket(i), ts[1].Addr()) // still in flight at Close
	}
	c, err := ts[0].DialTimeout(ts[1].Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	readErr := make(chan error, 1)
	go func() { // a reader blocked on a stream
		defer wg.Done()
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	go func() { // a dialer blocked on a full StreamCh (b never accepts)
		defer wg.Done()
		_, _ = ts[2].DialTimeout(ts[1].Addr(), time.Hour)
	}()
	// Shutting one node down breaks its streams and refuses new dials.
	if err := ts[1].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := ts[0].DialTimeout(ts[1].Addr(), time.Second); !errors.Is(err, ErrNoRoute) {
		t.Errorf("dial to a shut down node: %v, want ErrNoRoute", err)
	}
	if _, err := ts[1].WriteTo([]byte("x"), ts[0].Addr()); !errors.Is(err, ErrClosed) {
		t.Errorf("write from a shut down node: %v, want ErrClosed", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := <-readErr; err == nil {
		t.Error("read on a stream to a shut down node succeeded")
	}
	testwait.Until(t, 5*time.Second, "goroutines back to where they were", func() (bool, string) {
		now := runtime.NumGoroutine()
		return now <= before, fmt.Sprintf("%d goroutines, %d before", now, before)
	})
}
