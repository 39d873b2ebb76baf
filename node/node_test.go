package node_test

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node"
	"github.com/chiffon-dev/chiffon/node/nodetest"
	"github.com/chiffon-dev/chiffon/probe"
)

// lineCounter counts log lines containing a substring.
type lineCounter struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, string(p))
	l.mu.Unlock()
	return len(p), nil
}

func (l *lineCounter) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, x := range l.lines {
		if strings.Contains(x, sub) {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, timeout, what, testwait.Bool(cond))
}

// peerInfo decodes what observer currently believes about name.
func peerInfo(observer *node.Node, name string) (gossip.NodeInfo, bool) {
	for _, m := range observer.Gossip().Serf().Members() {
		if m.Name == name {
			info, err := gossip.DecodeTags(m.Tags)
			return info, err == nil
		}
	}
	return gossip.NodeInfo{}, false
}

func TestNode_HeartbeatGossipsSampleChanges(t *testing.T) {
	var logs lineCounter
	fs := nodetest.NewSampler(probe.Sample{CPUCoresPhysical: 8, CPUCoresAvailable: 8, GPUType: "nvidia", GPUVRAMTotalGB: 24,
		GPUVRAMAvailableGB: 24, GPUs: []probe.GPU{{Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 24}}})
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: []string{"obs"}, Desktops: []string{"desk"},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Node: func(name string, c *node.Config) error {
			if name == "desk" {
				c.Sampler = fs
			}
			return nil
		}})
	desk, obs := tc.Node("desk"), tc.Node("obs")

	// The first sample is in the tags from the start.
	waitFor(t, 5*time.Second, "desk's initial VRAM on obs", func() bool {
		i, ok := peerInfo(obs, "desk")
		return ok && i.MaxFreeVRAMGB == 24 && i.AgentID == desk.AgentID()
	})
	// A change is gossiped at the next heartbeat.
	fs.Set(probe.Sample{CPUCoresPhysical: 8, CPUCoresAvailable: 3.5, GPUType: "nvidia", GPUVRAMTotalGB: 24,
		GPUVRAMAvailableGB: 6, GPUs: []probe.GPU{{Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 6}}}, nil)
	waitFor(t, 5*time.Second, "desk's new VRAM on obs", func() bool {
		i, ok := peerInfo(obs, "desk")
		return ok && i.MaxFreeVRAMGB == 6 && i.Sample.CPUCoresAvailable == 3.5
	})
	// An orchestrator-only node gossips no resources.
	if i, ok := peerInfo(desk, "obs"); !ok || i.HasRole(gossip.RoleDesktop) || i.Sample.CPUCoresPhysical != 0 {
		t.Fatalf("orchestrator tags = %+v", i)
	}

	// A failing sampler is logged once, not per heartbeat, and the node lives on.
	fs.Set(probe.Sample{CPUCoresPhysical: 8, CPUCoresAvailable: 3.5, GPUType: "nvidia", GPUVRAMTotalGB: 24,
		GPUVRAMAvailableGB: 6, GPUs: []probe.GPU{{Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 6}}}, errors.New("disk on fire"))
	waitFor(t, 5*time.Second, "the failure logged", func() bool { return logs.count("disk on fire") >= 1 })
	beats, since := logs.count("disk on fire"), fs.Calls()
	waitFor(t, 5*time.Second, "ten more heartbeats", func() bool { return fs.Calls() >= since+10 })
	if n := logs.count("disk on fire"); n != beats {
		t.Fatalf("failure logged %d times over ten heartbeats, want once", n)
	}

	// Graceful leave: the observer sees "left".
	if err := desk.Leave(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "desk left", func() bool {
		for _, m := range obs.Gossip().Serf().Members() {
			if m.Name == "desk" {
				return m.Status.String() == "left"
			}
		}
		return false
	})
}

func TestNode_IdentitySurvivesRestart(t *testing.T) {
	tc := nodetest.Start(t, nodetest.Config{Desktops: []string{"same"}})
	id := tc.Node("same").AgentID()
	if n2 := tc.Restart("same"); n2.AgentID() != id || id == "" {
		t.Fatalf("agent_id %q then %q", id, n2.AgentID())
	}
}

// A desktop pushes a change of free VRAM of -push-vram-delta-gb or more
// (the owner took VRAM) within about a second, with a heartbeat far away;
// smaller drift waits for the heartbeat; the owner's headroom never shows
// as free.
func TestNode_VRAMChangePushedBeforeHeartbeat(t *testing.T) {
	gpu := func(free float64) probe.Sample {
		return probe.Sample{CPUCoresPhysical: 8, CPUCoresAvailable: 8, GPUType: "nvidia", GPUVRAMTotalGB: 24,
			GPUVRAMAvailableGB: free, GPUs: []probe.GPU{{Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: free, UtilizationPct: -1}}}
	}
	fs := nodetest.NewSampler(gpu(20))
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: []string{"obs"}, Desktops: []string{"desk"},
		Node: func(name string, c *node.Config) error {
			if name == "desk" {
				c.Sampler = fs
				c.HeartbeatInterval = time.Hour
				c.VRAM.HeadroomGB = 2
			}
			return nil
		}})
	obs := tc.Node("obs")
	free := func() float64 {
		i, ok := peerInfo(obs, "desk")
		if !ok {
			return -1
		}
		return i.MaxFreeVRAMGB
	}
	waitFor(t, 5*time.Second, "desk's first sample, less the 2 GB headroom, on obs", func() bool { return free() == 18 })

	fs.Set(gpu(19.5), nil) // drift below the 1 GB delta
	since := fs.Calls()
	waitFor(t, 10*time.Second, "three VRAM checks", func() bool { return fs.Calls() >= since+3 })
	if f := free(); f != 18 {
		t.Fatalf("a 0.5 GB drift was gossiped before the heartbeat: obs sees %v GB", f)
	}

	fs.Set(gpu(8), nil) // the owner takes 12 GB
	start := time.Now()
	waitFor(t, 3*time.Second, "the owner's use pushed to obs", func() bool { return free() == 6 })
	t.Logf("pushed and seen on obs after %s", time.Since(start).Round(time.Millisecond))
}
