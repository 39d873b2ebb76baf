package node

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/chiffon-dev/chiffon/probe"
)

// A desktop's VRAM policy: the VRAM it always leaves to its owner, and
// when a change is gossiped at once rather than at the next heartbeat.
//
// Headroom is kept by the desktop itself: the free VRAM it gossips is
// what it observed less the headroom (never below 0), per GPU. So the
// policy costs no tag bytes, a leader needs no setting of its own, and
// every reader of the tags (placement, the capacity API, `chiffon
// members`) sees the same offered figure. The ledger on the leader
// (fleet.GPULedger) is therefore given a headroom of 0.
//
// Pushes: every CheckInterval the desktop takes a sample (the probe's
// usual one: NVML, nvidia-smi, sysfs or the metrics file) and compares it
// with the one it last gossiped. A GPU whose free VRAM moved by
// PushDeltaGB or more, a GPU that went busy or idle (busyUtilizationPct),
// or a GPU that appeared or vanished makes it gossip the new sample at
// once. Smaller drift waits for the heartbeat. Pushes are rate-limited by
// a token bucket (pushBurst tokens, one more per pushEvery): serf sends a
// tag change as one memberlist "alive" message, and memberlist's broadcast
// queue keeps only the newest message per node (a newer one invalidates
// the older), so however often a desktop pushes, the queue holds one
// message of it; the bucket bounds what the cluster as a whole
// retransmits (at most one message per desktop per second, beyond a burst
// of three) and the raft entries the leader writes for them.

// VRAMConfig is a desktop's VRAM policy.
type VRAMConfig struct {
	// HeadroomGB is VRAM on each GPU never offered to Chiffon work: the
	// desktop subtracts it from the free VRAM it gossips
	// (-owner-vram-headroom-gb).
	HeadroomGB float64
	// PushDeltaGB is the change of free VRAM on one GPU, since the last
	// gossiped sample, that is gossiped at once (-push-vram-delta-gb);
	// 0 turns pushes off (changes wait for the heartbeat).
	PushDeltaGB float64
	// CheckInterval is how often the desktop samples to look for such a
	// change; pushes are off when it is not shorter than the heartbeat.
	CheckInterval time.Duration
}

// DefaultVRAMConfig returns the defaults: no headroom, a push when free
// VRAM moves by 1 GB, checked every second.
func DefaultVRAMConfig() VRAMConfig {
	return VRAMConfig{PushDeltaGB: 1, CheckInterval: time.Second}
}

// maxHeadroomGB bounds -owner-vram-headroom-gb: more than any GPU has
// (probe's limit of a GPU, 4 TiB) is a typo.
const maxHeadroomGB = 4096

func (c VRAMConfig) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	if math.IsNaN(c.HeadroomGB) || c.HeadroomGB < 0 || c.HeadroomGB > maxHeadroomGB {
		return bad("-owner-vram-headroom-gb: %v; must be from 0 to %d GB", c.HeadroomGB, maxHeadroomGB)
	}
	if math.IsNaN(c.PushDeltaGB) || c.PushDeltaGB < 0 || c.PushDeltaGB > maxHeadroomGB {
		return bad("-push-vram-delta-gb: %v; must be from 0 (no pushes) to %d GB", c.PushDeltaGB, maxHeadroomGB)
	}
	if c.CheckInterval < 0 {
		return bad("VRAM check interval %s; must not be negative", c.CheckInterval)
	}
	return nil
}

// busyUtilizationPct is the GPU utilisation at or above which a GPU is
// busy. Busy is utilisation alone (Chiffon work on a GPU shows there,
// and the leader knows its own work already): a desktop's compositor
// keeps an idle GPU below it; a game, a training run or a work item does
// not. An unknown utilisation (-1) is idle.
const busyUtilizationPct = 10

// Token bucket of pushes: pushBurst at once, then one per pushEvery.
const (
	pushBurst = 3
	pushEvery = time.Second
)

// withHeadroom returns s as the desktop offers it: every GPU's free VRAM
// less HeadroomGB (not below 0), and the sums again. Without per-GPU
// detail the totals describe one card, and the headroom comes off once.
func (c VRAMConfig) withHeadroom(s probe.Sample) probe.Sample {
	h := c.HeadroomGB
	if h <= 0 || s.GPUType == probe.GPUTypeNone && s.GPUVRAMTotalGB == 0 {
		return s
	}
	if len(s.GPUs) == 0 {
		s.GPUVRAMAvailableGB = round2(max(0, s.GPUVRAMAvailableGB-h))
		return s
	}
	s.GPUs = append([]probe.GPU(nil), s.GPUs...)
	var free float64
	for i := range s.GPUs {
		s.GPUs[i].VRAMFreeGB = round2(max(0, s.GPUs[i].VRAMFreeGB-h))
		free += s.GPUs[i].VRAMFreeGB
	}
	s.GPUVRAMAvailableGB = round2(free)
	return s
}

// round2 rounds to two decimals, as the probe does.
func round2(x float64) float64 { return math.Round(x*100) / 100 }

// pushReason says why sample next must be gossiped before the heartbeat,
// given the one last gossiped ("" when it need not): a GPU's free VRAM
// moved by deltaGB or more, a GPU went busy or idle, or the set of GPUs
// changed. Samples without per-GPU detail compare their total free VRAM.
func pushReason(last, next probe.Sample, deltaGB float64) string {
	if deltaGB <= 0 {
		return ""
	}
	if len(last.GPUs) == 0 && len(next.GPUs) == 0 {
		if d := next.GPUVRAMAvailableGB - last.GPUVRAMAvailableGB; math.Abs(d) >= deltaGB {
			return fmt.Sprintf("free VRAM moved by %.2f GB", d)
		}
		return ""
	}
	prev := make(map[int]probe.GPU, len(last.GPUs))
	for _, g := range last.GPUs {
		prev[g.Index] = g
	}
	if len(prev) != len(next.GPUs) {
		return "the GPUs changed"
	}
	for _, g := range next.GPUs {
		p, ok := prev[g.Index]
		switch {
		case !ok:
			return "the GPUs changed"
		case math.Abs(g.VRAMFreeGB-p.VRAMFreeGB) >= deltaGB:
			return fmt.Sprintf("free VRAM on GPU %d moved by %.2f GB", g.Index, g.VRAMFreeGB-p.VRAMFreeGB)
		case busy(g) != busy(p):
			if busy(g) {
				return fmt.Sprintf("GPU %d went busy", g.Index)
			}
			return fmt.Sprintf("GPU %d went idle", g.Index)
		}
	}
	return ""
}

func busy(g probe.GPU) bool { return g.UtilizationPct >= busyUtilizationPct }

// pushBucket is the token bucket of pushes. Only vramLoop's goroutine
// uses it.
type pushBucket struct {
	tokens float64
	at     time.Time
}

// take spends a token at now if there is one.
func (b *pushBucket) take(now time.Time) bool {
	if b.at.IsZero() {
		b.tokens = pushBurst
	} else {
		b.tokens = min(pushBurst, b.tokens+now.Sub(b.at).Seconds()/pushEvery.Seconds())
	}
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// vramLoop is the desktop's push loop (see VRAMConfig); the node's wg
// owns it and n.stop ends it.
func (n *Node) vramLoop() {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-n.stop
		cancel()
	}()
	t := time.NewTicker(n.cfg.VRAM.CheckInterval)
	defer t.Stop()
	var bucket pushBucket
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.checkVRAM(ctx, &bucket)
	}
}

// checkVRAM samples and gossips the sample at once when pushReason says
// so and the bucket has a token; otherwise the change is looked at again
// at the next check (against the same gossiped sample), so a denied push
// goes out within a second.
func (n *Node) checkVRAM(ctx context.Context, bucket *pushBucket) {
	n.beatMu.Lock()
	defer n.beatMu.Unlock()
	s, err := n.sampler.Sample(ctx)
	if err != nil {
		return // the heartbeat logs sampling failures
	}
	why := pushReason(n.gossiped, s, n.cfg.VRAM.PushDeltaGB)
	if why == "" || !bucket.take(time.Now()) {
		return
	}
	n.mu.Lock()
	n.lastSample = s
	n.mu.Unlock()
	n.pubMu.Lock() // info reads the owner state, which must not go back either
	_, err = n.gossip.UpdateInfo(n.info(s))
	n.pubMu.Unlock()
	if err != nil {
		n.logger.Warn("pushing a VRAM change failed", "err", err)
		return
	}
	n.gossiped = s
	n.logger.Debug("pushed a VRAM change", "reason", why, "gpu-vram-available-gb", s.GPUVRAMAvailableGB)
}
