package simnet

import (
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// scaledConfig is memberlist's LAN configuration with every timing divided
// by scale, as `chiffon sim -time-scale` will run it.
func scaledConfig(name string, tr *Transport, scale float64) *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	s := func(d time.Duration) time.Duration { return time.Duration(float64(d) / scale) }
	c.Name = name
	c.Transport = tr
	c.ProbeInterval = s(c.ProbeInterval)
	c.ProbeTimeout = s(c.ProbeTimeout)
	c.GossipInterval = s(c.GossipInterval)
	c.PushPullInterval = s(c.PushPullInterval)
	c.TCPTimeout = s(c.TCPTimeout)
	c.GossipToTheDeadTime = s(c.GossipToTheDeadTime)
	c.Logger = log.New(io.Discard, "", 0)
	// Compression changes bytes only (memberlist packs messages to the
	// packet budget before compressing), and costs a 64 KiB LZW table per
	// packet: with many nodes in one process the allocation and the GC
	// it causes were a third of the CPU (docs/PERFORMANCE.md).
	c.EnableCompression = false
	return c
}

// detectionBound is how long after a crash every other node may take to
// declare it dead, from memberlist's own formulas: some node probes it
// within a few probe intervals (SWIM expects ≈ 1.58 at low loss; we allow
// 4 and the probe's own timeout), Lifeguard's suspicion timer then runs at
// most SuspicionMaxTimeoutMult × SuspicionMult × log10(n) × ProbeInterval
// (less as confirmations arrive), and the dead message spreads by gossip in
// about RetransmitMult × log10(n+1) gossip intervals. The sum is doubled
// because a busy machine stretches every timer (Lifeguard's awareness
// backs probes off under load by design).
func detectionBound(c *memberlist.Config, n int) time.Duration {
	min := time.Duration(float64(c.SuspicionMult) * math.Max(1, math.Log10(float64(n))) * float64(c.ProbeInterval))
	maxSuspicion := time.Duration(c.SuspicionMaxTimeoutMult) * min
	probe := 4*c.ProbeInterval + c.ProbeTimeout
	spread := time.Duration(float64(c.RetransmitMult)*math.Ceil(math.Log10(float64(n+1)))) * c.GossipInterval
	return 2 * (probe + maxSuspicion + spread)
}

type cluster struct {
	net   *Network
	nodes []*memberlist.Memberlist
	trs   []*Transport
	cfg   *memberlist.Config // the first node's, for the timings
}

func newCluster(t *testing.T, n int, scale float64, link Link) *cluster {
	t.Helper()
	ncfg := DefaultConfig()
	ncfg.TimeScale = scale
	ncfg.Default = link
	c := &cluster{net: newNet(t, ncfg)}
	t0 := time.Now()
	for i := range n {
		name := fmt.Sprintf("n%03d", i)
		tr, err := c.net.NewTransport(name)
		if err != nil {
			t.Fatal(err)
		}
		mc := scaledConfig(name, tr, scale)
		if i == 0 {
			c.cfg = mc
		}
		m, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Shutdown() })
		c.nodes = append(c.nodes, m)
		c.trs = append(c.trs, tr)
		if i > 0 {
			// Join the first node and another earlier one: with one
			// random seed, many joins at once leave convergence to
			// push-pull (tens of seconds).
			seeds := []string{c.trs[0].Addr(), c.trs[i/2].Addr()}
			if _, err := m.Join(seeds); err != nil {
				t.Fatalf("%s join: %v", name, err)
			}
		}
	}
	t.Logf("created and joined %d nodes in %s; %+v", n, time.Since(t0), c.net.Stats())
	return c
}

// waitView waits until every live node in from sees exactly the nodes in
// want as members (alive or suspect).
func (c *cluster) waitView(t *testing.T, timeout time.Duration, what string, from []int, want func(i, j int) bool) time.Duration {
	t.Helper()
	return testwait.Every(t, 50*time.Millisecond, timeout, what, func() (bool, string) {
		bad, first := 0, ""
		for _, i := range from {
			seen := make(map[string]bool)
			for _, m := range c.nodes[i].Members() {
				seen[m.Name] = true
			}
			for j, tr := range c.trs {
				if seen[tr.Name()] != want(i, j) {
					if bad == 0 {
						first = fmt.Sprintf("%s sees %s: %v", c.trs[i].Name(), tr.Name(), seen[tr.Name()])
					}
					bad++
				}
			}
		}
		return bad == 0, fmt.Sprintf("%d views wrong, first %s", bad, first)
	})
}

func span(lo, hi int, skip ...int) []int {
	var out []int
outer:
	for i := lo; i < hi; i++ {
		for _, s := range skip {
			if i == s {
				continue outer
			}
		}
		out = append(out, i)
	}
	return out
}

// TestMemberlist_CrashAndPartition runs real memberlist nodes on one
// Network at scaled SWIM timings: they converge to all alive, a crashed
// node is declared dead by every other within memberlist's own bound, and
// a partition is detected on both sides and then heals.
func TestMemberlist_CrashAndPartition(t *testing.T) {
	// Memberlist's CPU grows with nodes × time scale; these fit a busy
	// 2-core machine (without -race, 40 nodes at scale 5 use about a
	// third of a core). SIMNET_NODES overrides n for a measurement.
	n, scale := 70, 2.0
	switch {
	case raceEnabled:
		n = 10
	case testing.Short():
		n = 50
	}
	if v, err := strconv.Atoi(os.Getenv("SIMNET_NODES")); err == nil && v > 2 {
		n = v
	}
	link := Link{Latency: 2 * time.Millisecond, Jitter: time.Millisecond}
	start := time.Now()
	c := newCluster(t, n, scale, link)
	all := span(0, n)
	// Typically a few seconds; the minute covers a machine so busy that a
	// node is falsely declared dead while joining and must wait for a
	// push-pull (PushPullInterval, scaled up with n) to hear it and refute.
	c.waitView(t, time.Minute, "all alive", all, func(_, _ int) bool { return true })
	t.Logf("%d nodes joined and converged in %s; %+v", n, time.Since(start).Round(time.Millisecond), c.net.Stats())

	bound := detectionBound(c.cfg, n)
	victim := n - 1
	_ = c.trs[victim].Shutdown() // a crash: silent from now on
	detect := c.waitView(t, bound, "crashed node dead everywhere", span(0, n, victim), func(_, j int) bool { return j != victim })
	t.Logf("crash detected by all %d in %s wall (%s real time); bound %s wall", n-1,
		detect.Round(time.Millisecond), time.Duration(float64(detect)*scale).Round(time.Millisecond), bound)
	_ = c.nodes[victim].Shutdown()

	// Partition the rest into halves; each side declares the other dead.
	half := victim / 2
	var a, b []string
	for i := range victim {
		if i < half {
			a = append(a, c.trs[i].Name())
		} else {
			b = append(b, c.trs[i].Name())
		}
	}
	c.net.Partition("A", a...)
	c.net.Partition("B", b...)
	c.net.Cut("A", "B")
	side := func(i int) bool { return i < half }
	live := span(0, victim)
	detect = c.waitView(t, 3*bound, "each side sees only itself", live, func(i, j int) bool {
		return j != victim && side(i) == side(j)
	})
	t.Logf("partition detected on both sides in %s wall", detect.Round(time.Millisecond))

	// Heal. Memberlist alone keeps gossiping to the dead only for
	// GossipToTheDeadTime; serf on top reconnects to failed members, which
	// every node here does once, to a node across: the push-pull tells
	// each side it was thought dead, and it refutes.
	c.net.Heal("A", "B")
	healStart := time.Now()
	for _, i := range live {
		across := c.trs[(i+half)%victim].Addr()
		if _, err := c.nodes[i].Join([]string{across}); err != nil {
			t.Fatalf("%s join across the healed partition: %v", c.trs[i].Name(), err)
		}
	}
	t.Logf("%d joins across took %s", len(live), time.Since(healStart).Round(time.Millisecond))
	c.waitView(t, 3*bound, "all alive again after heal", live, func(_, j int) bool { return j != victim })
	t.Logf("partition healed in %s wall", time.Since(healStart).Round(time.Millisecond))
}
