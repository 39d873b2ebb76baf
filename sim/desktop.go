package sim

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node/telemetry"
	"github.com/chiffon-dev/chiffon/probe"
)

// desktop is a light simulated desktop: the real gossip package (serf on
// memberlist over a simnet transport, or loopback sockets in process
// mode) carrying tags made by the real tag
// codec, and nothing else. A real desktop also runs the probe, a work
// endpoint and serf's RPC; none of them changes what the orchestrators see
// through gossip, and leaving them out is what lets 5,000 fit in one
// process.
type desktop struct {
	name    string
	agentID string
	rng     *rand.Rand // only the driver goroutine uses it

	// The fields below are owned by the run's driver goroutine (join,
	// heartbeat, kill, leave and rejoin all happen there or before it
	// starts).
	g      *gossip.Gossip
	tr     transport
	sample probe.Sample
	seq    int // load 15 carries seq/100: which change reached the registry
	up     bool
	// rep pushes the tags to the leader (nil: gossip only);
	// pushSent and pushFailed count what closed reporters did.
	rep                  *telemetry.Reporter
	pushSent, pushFailed atomic.Uint64
	// onOffer, if set, is told every tag set handed to the reporter
	// (the run's hopLog).
	onOffer func(name string, tags map[string]string)
}

// gpuModels are the synthetic GPUs a desktop may have.
var gpuModels = []struct {
	name string
	gb   float64
}{{"NVIDIA GeForce RTX 4090", 24}, {"NVIDIA RTX A6000", 48}, {"NVIDIA GeForce RTX 3060", 12}}

func newDesktop(i int, seed uint64) *desktop {
	rng := rand.New(rand.NewPCG(seed, uint64(i)+1<<32))
	d := &desktop{name: fmt.Sprintf("desk-%05d", i), agentID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), rng: rng}
	cores := []int{8, 16, 32}[rng.IntN(3)]
	s := probe.Sample{CPUCoresPhysical: cores, CPULoad1: float64(rng.IntN(100)) / 100, MemoryPercent: 20 + float64(rng.IntN(400))/10,
		GPUType: probe.GPUTypeNone, Source: "sim"}
	s.MemoryAvailableGB = 64 * (100 - s.MemoryPercent) / 100
	if n := rng.IntN(3); n > 0 { // two thirds have one or two GPUs
		m := gpuModels[rng.IntN(len(gpuModels))]
		s.GPUType = "nvidia"
		for k := range n {
			s.GPUs = append(s.GPUs, probe.GPU{Index: k, Name: m.name, VRAMTotalGB: m.gb, VRAMFreeGB: m.gb, UtilizationPct: 0})
		}
	}
	d.sample = s
	d.fix()
	return d
}

// fix derives the sample's sums from its parts.
func (d *desktop) fix() {
	s := &d.sample
	s.CPULoad5 = s.CPULoad1
	s.CPULoad15 = float64(d.seq%10000) / 100
	s.CPUCoresAvailable = max(0, float64(s.CPUCoresPhysical)-s.CPULoad1)
	s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB = 0, 0
	for _, g := range s.GPUs {
		s.GPUVRAMTotalGB += g.VRAMTotalGB
		s.GPUVRAMAvailableGB += g.VRAMFreeGB
	}
}

// drift moves the desktop's metrics one heartbeat on: the load wanders,
// and each GPU goes busy (most of its memory taken) or idle now and then.
// It returns whether anything changed; a change always moves seq.
func (d *desktop) drift(changeProb float64) bool {
	if d.rng.Float64() >= changeProb {
		return false
	}
	s := &d.sample
	s.CPULoad1 = min(float64(s.CPUCoresPhysical), max(0, s.CPULoad1+float64(d.rng.IntN(61)-30)/100))
	for k := range s.GPUs {
		g := &s.GPUs[k]
		if d.rng.Float64() < 0.1 {
			if g.UtilizationPct > 0 {
				g.UtilizationPct, g.VRAMFreeGB = 0, g.VRAMTotalGB
			} else {
				g.UtilizationPct, g.VRAMFreeGB = 95, float64(d.rng.IntN(int(g.VRAMTotalGB)*10/4))/10
			}
		}
	}
	d.seq++
	d.fix()
	return true
}

func (d *desktop) info() gossip.NodeInfo {
	return gossip.NodeInfo{AgentID: d.agentID, Roles: []string{gossip.RoleDesktop}, Sample: d.sample}
}

// start creates the desktop's gossip on a new transport from newTr and
// joins seeds.
func (d *desktop) start(ctx context.Context, newTr func(name string) (transport, error), newRep func(name string) *telemetry.Reporter,
	t timings, seeds []string, logger *slog.Logger) error {
	tr, err := newTr(d.name)
	if err != nil {
		return err
	}
	d.sample.TakenAt = time.Now() // a desktop samples as it starts
	tags, err := gossip.EncodeTags(nil, d.info())
	if err != nil {
		_ = tr.Shutdown()
		return err
	}
	gc := gossip.DefaultConfig()
	gc.NodeName = d.name
	gc.RPCAddr = ""
	gc.Transport = tr
	gc.Tags = tags
	gc.Join = seeds
	gc.Logger = logger
	t.gossip(&gc)
	rep := newRep(d.name)
	if rep != nil {
		gc.TagsChanged = rep.Offer
		if on := d.onOffer; on != nil {
			name := d.name
			gc.TagsChanged = func(tags map[string]string) {
				on(name, tags)
				rep.Offer(tags)
			}
		}
	}
	g, err := gossip.New(gc)
	if err == nil {
		err = g.Start(ctx)
	}
	if err != nil {
		if rep != nil {
			rep.Close()
		}
		_ = tr.Shutdown()
		return fmt.Errorf("%s: %w", d.name, err)
	}
	if rep != nil {
		rep.Offer(tags)
	}
	d.g, d.tr, d.rep, d.up = g, tr, rep, true
	return nil
}

// closeReporter stops the desktop's pushes, adding its counts to the
// desktop's totals.
func (d *desktop) closeReporter() {
	if d.rep != nil {
		d.rep.Close()
		st := d.rep.Stats()
		d.pushSent.Add(st.Sent)
		d.pushFailed.Add(st.Failed)
		d.rep = nil
	}
}

// pushStats is what the desktop's reporters have done so far.
func (d *desktop) pushStats() (sent, failed uint64) {
	sent, failed = d.pushSent.Load(), d.pushFailed.Load()
	if d.rep != nil {
		st := d.rep.Stats()
		sent, failed = sent+st.Sent, failed+st.Failed
	}
	return sent, failed
}

// crash silences the desktop at once, as a power cut does.
func (d *desktop) crash() {
	if !d.up {
		return
	}
	d.closeReporter()
	_ = d.tr.Shutdown()
	_ = d.g.Close()
	d.up = false
}

// leave leaves gracefully, as a desktop shut down at night does.
func (d *desktop) leave(timeout time.Duration) {
	if !d.up {
		return
	}
	_ = d.g.Leave(timeout)
	d.closeReporter()
	_ = d.g.Close()
	_ = d.tr.Shutdown()
	d.up = false
}
