package sim

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/chiffon-dev/chiffon/gossip"
)

// measure runs the measured part: the driver loop (heartbeats and faults)
// on this goroutine, the registry observer and the HTTP queries on their
// own, and fills the report.
func (r *run) measure(ctx context.Context) error {
	cfg := r.cfg
	wall := r.t.d(cfg.Duration)
	o := &observer{r: r, watch: map[string]*watch{}, terms: map[uint64]bool{}}
	r.obs = o
	for _, d := range r.desks {
		o.get(d.name)
	}
	startIndex, startTerm, ok := r.leaderRaft()
	if !ok {
		return ErrNotSettled
	}

	// Faults, picked by the seed among distinct desktops.
	perm := r.rng.Perm(len(r.desks))
	kill := perm[:cfg.Kill]
	churn := perm[cfg.Kill : cfg.Kill+cfg.Churn]
	part := perm[cfg.Kill+cfg.Churn : cfg.Kill+cfg.Churn+cfg.Partition]
	faultAt := wall / 10
	rejoinAt := wall / 2
	healAt := faultAt + r.t.d(cfg.PartitionFor)

	stalls, err := startStallWatch(cfg.StallTrace, nil)
	if err != nil {
		return err
	}
	closeStalls := sync.OnceValues(func() (int, time.Duration) {
		n, longest, traced, err := stalls.close()
		if err != nil {
			r.logger.Warn("stall trace not written", "file", cfg.StallTrace, "err", err)
		} else if traced {
			r.rep.StallTrace = cfg.StallTrace
		}
		return n, longest
	})
	defer closeStalls()
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	o.t0 = time.Now()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); o.run(mctx, r.pollInterval()) }()
	var lat []float64
	var fails int
	go func() { defer wg.Done(); lat, fails = r.queries(mctx, 250*time.Millisecond) }()
	t0 := o.t0
	prof := r.startProfile()
	cpu0 := processCPU()
	orch0 := r.orchestratorStats()

	// Tag updates go to a goroutine per desktop (updatePool): serf's
	// SetTags waits until memberlist has sent the update its full number
	// of times, up to serf's BroadcastTimeout (5 s) once broadcast queues
	// are long, as a real desktop's heartbeat waits on its own. A fixed
	// pool of workers fills with such waits: 256 workers at 500 desktops
	// and half speed (33 updates a second, each blocked up to 10 s wall)
	// made the wait for a worker the largest share of tag_to_registry's
	// p99 (1.78 of 1.81 s, Report.TagHops).
	pool := newUpdatePool(func(u tagUpdate) {
		if changed, err := u.g.UpdateInfo(u.info); err == nil && changed && u.drifted {
			o.changed(u.name, u.seq, u.at)
		}
	})
	closeUpdates := sync.OnceFunc(pool.close)
	defer closeUpdates()

	// Heartbeats are spread evenly: desktop i beats at phase i/N of each
	// interval.
	hb := r.t.d(cfg.HeartbeatInterval)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	nextBeat := 0 // index of beats done: desktop nextBeat%N is next
	faulted, rejoined, healed := false, false, false
	var healT time.Time
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			stop()
			wg.Wait()
			prof.stop()
			return ctx.Err()
		case now = <-tick.C:
		}
		el := now.Sub(t0)
		if el >= wall {
			break
		}
		if !faulted && el >= faultAt {
			faulted = true
			r.progress("faults: %d crash, %d leave, %d cut off", len(kill), len(churn), len(part))
			for _, i := range kill {
				d := r.desks[i]
				o.killed(d.name, time.Now())
				d.crash()
				r.rep.KilledNames = append(r.rep.KilledNames, d.name)
			}
			for _, i := range churn {
				d := r.desks[i]
				o.setExcused(d.name, true)
				d.leave(r.t.d(5 * time.Second))
			}
			if len(part) > 0 {
				var names []string
				for _, i := range part {
					names = append(names, r.desks[i].name)
					o.setExcused(r.desks[i].name, true)
				}
				r.nw.Partition("cut", names...)
				r.nw.Cut("cut", "")
			}
		}
		if faulted && !healed && len(part) > 0 && el >= healAt {
			healed, healT = true, time.Now()
			r.nw.HealAll()
			r.progress("partition healed")
		}
		if faulted && !rejoined && el >= rejoinAt {
			rejoined = true
			r.progress("%d desktops rejoin", len(churn))
			for k, i := range churn {
				d := r.desks[i]
				seed := r.orchestratorGossip(r.orchs[k%len(r.orchs)])
				if seed == "" {
					continue
				}
				if err := d.start(ctx, r.newTransport, r.reporter, r.t, []string{seed}, r.logger); err != nil {
					r.logger.Warn("rejoin failed", "desktop", d.name, "err", err)
				}
			}
		}
		// Beats due by now.
		due := int(float64(el) / float64(hb) * float64(len(r.desks)))
		for ; nextBeat < due; nextBeat++ {
			d := r.desks[nextBeat%len(r.desks)]
			if !d.up {
				continue
			}
			drifted := d.drift(cfg.ChangeProb)
			// Every beat samples anew, as a real desktop's heartbeat does:
			// the sample time (tag ts) moves even when the metrics do not,
			// so every beat is a tag update on the wire, and a desktop cut
			// off for a while comes back with a newer sample than the one
			// it was declared failed with (gossip/ghost.go).
			d.sample.TakenAt = time.Now()
			info := d.info()
			info.Sample.GPUs = slices.Clone(info.Sample.GPUs) // drift edits them in place
			pool.send(tagUpdate{g: d.g, name: d.name, info: info, seq: d.seq, at: time.Now(), drifted: drifted})
		}
	}
	elapsed := time.Since(t0)
	closeUpdates()
	nStalls, longest := closeStalls()
	r.rep.SimStalls, r.rep.SimMaxStallWallS = nStalls, longest.Seconds()
	cpu := processCPU() - cpu0
	orch1 := r.orchestratorStats()
	leaderName := r.leaderName()
	cpuBy, profiled := prof.stop()
	stop()
	wg.Wait()
	o.poll(time.Now())
	if err := prof.save(cfg.CPUProfile); err != nil {
		return err
	}
	if err := saveHeap(cfg.HeapProfile); err != nil {
		return err
	}

	// Excused nodes back: churned and partitioned desktops online again.
	rep := r.rep
	rep.Leader = leaderName
	byName := map[string]string{}
	recs, _ := r.leaderRegistry()
	for _, rec := range recs {
		byName[rec.Name] = string(rec.Status)
	}
	endIndex, endTerm, raftOK := r.leaderRaft()
	if raftOK {
		rep.RaftEntriesPerS = float64(endIndex-startIndex) / (elapsed.Seconds() * cfg.TimeScale)
	}
	rep.Churned, rep.Partitioned = len(churn), len(part)
	for _, i := range churn {
		if byName[r.desks[i].name] == "online" {
			rep.ChurnBackOnline++
		}
	}
	for _, i := range part {
		if byName[r.desks[i].name] == "online" {
			rep.PartitionBackOnline++
		}
	}
	if healed {
		rep.PartitionHealS = -1
		if rep.PartitionBackOnline == len(part) {
			rep.PartitionHealS = o.lastOnline(part, healT) * cfg.TimeScale
		}
	}

	o.mu.Lock()
	rep.Killed = len(kill)
	for _, i := range kill {
		w := o.watch[r.desks[i].name]
		rep.OfflineAfterS = append(rep.OfflineAfterS, after(w.offlineAt, w.killedAt, cfg.TimeScale))
		rep.SuspectAfterS = append(rep.SuspectAfterS, after(w.suspectAt, w.killedAt, cfg.TimeScale))
		if w.onlineAgain {
			rep.KilledOnlineAgain++
		}
	}
	for _, w := range o.watch {
		if w.falseS {
			rep.FalseSuspect++
		}
		if w.falseO {
			rep.FalseOffline++
		}
	}
	rep.TagChanges, rep.TagChangesSeen = o.made, o.seen
	rep.FalseSuspectAtS = o.falseAt
	rep.TagToRegistryP50S = percentile(o.tagS, 50)
	rep.TagToRegistryP99S = percentile(o.tagS, 99)
	rep.TagToRegistryMaxS = percentile(o.tagS, 100)
	if r.hops != nil {
		th := o.hs.report(cfg.TimeScale)
		rep.TagHops = &th
	}
	maxTerm := max(startTerm, endTerm)
	for t := range o.terms {
		maxTerm = max(maxTerm, t)
	}
	o.mu.Unlock()
	rep.Elections = int(maxTerm - startTerm)
	rep.QueryP50MS, rep.QueryP99MS, rep.Queries, rep.QueryFails = percentile(lat, 50), percentile(lat, 99), len(lat), fails
	rep.LeaderCPUPct = -1
	if profiled && r.procs == nil {
		rep.LeaderCPUPct = 100 * cpuBy[leaderName].Seconds() / elapsed.Seconds()
	}
	rep.ProcessCPUPct = 100 * cpu.Seconds() / elapsed.Seconds()
	rep.ProcessRSSMiB, rep.ProcessPeakRSSMiB = rss("self")
	rep.LeaderRSSMiB, rep.LeaderPeakRSSMiB = -1, -1
	r.leaderProcess(leaderName, orch0, orch1, elapsed)
	rep.GoHeapMiB = goHeapMiB()
	rep.Network = r.nw.Stats()
	r.expected()
	return nil
}

// tagUpdate is one desktop's new tags for the update pool.
type tagUpdate struct {
	g    *gossip.Gossip
	name string
	info gossip.NodeInfo
	seq  int
	at   time.Time // when the desktop changed: the latency runs from here
	// drifted: the metrics changed (a tag change the observer times);
	// otherwise only the sample time moved.
	drifted bool
}

// lastOnline is how long after from the last of names turned online in
// the registry (wall seconds).
func (o *observer) lastOnline(idx []int, from time.Time) float64 {
	recs, ok := o.r.leaderRegistry()
	if !ok {
		return -1
	}
	changed := map[string]time.Time{}
	for _, rec := range recs {
		changed[rec.AgentID] = rec.StatusChangedAt
	}
	last := 0.0
	for _, i := range idx {
		at, ok := changed[o.r.desks[i].agentID]
		if !ok {
			return -1
		}
		last = max(last, at.Sub(from).Seconds())
	}
	return last
}

// expected fills the figures the configuration promises.
func (r *run) expected() {
	rep := r.rep
	lan := memberlist.DefaultLANConfig()
	def := gossip.DefaultConfig()
	n := float64(r.cfg.Desktops + r.cfg.Orchestrators)
	rep.ProbeIntervalS = def.ProbeInterval.Seconds()
	rep.SuspicionMult, rep.SuspicionMaxTimeoutMult = def.SuspicionMult, def.SuspicionMaxTimeoutMult
	rep.SWIMFirstDetectionS = math.E / (math.E - 1) * def.ProbeInterval.Seconds()
	rep.MemberlistSuspicionS = float64(def.SuspicionMult) * math.Max(1, math.Log10(math.Max(1, n))) * def.ProbeInterval.Seconds()
	// Serf calls the node failed after the first detection, the failed
	// probe (one interval) and the suspicion timeout.
	rep.ExpectedSerfFailedS = rep.SWIMFirstDetectionS + lan.ProbeInterval.Seconds() + rep.MemberlistSuspicionS
	rep.ExpectedOfflineS = 90
	rep.GossipNodes, rep.RetransmitMult = lan.GossipNodes, lan.RetransmitMult
	rep.PushTelemetry = r.cfg.PushTelemetry
	for _, d := range r.desks {
		sent, failed := d.pushStats()
		rep.PushesSent += sent
		rep.PushFailures += failed
	}
	if r.cfg.GossipNodes > 0 {
		rep.GossipNodes = r.cfg.GossipNodes
	}
	if r.cfg.RetransmitMult > 0 {
		rep.RetransmitMult = r.cfg.RetransmitMult
	}
}

// after is (t − from) in real seconds, or -1 if t is zero.
func after(t, from time.Time, scale float64) float64 {
	if t.IsZero() {
		return -1
	}
	return t.Sub(from).Seconds() * scale
}

// pollInterval is how often the observer reads the registry: every 20 ms,
// slower for large fleets so that copying the registry stays a small
// share of the CPU (at n/50 ms it was 9 % of the process's CPU with 300
// desktops). Its precision does not depend on it: status times come from
// the records, tag times from the leader's plan time.
func pollInterval(n int) time.Duration {
	return max(20*time.Millisecond, time.Duration(n/10)*time.Millisecond)
}

// updatePool applies each desktop's tag updates in order on a goroutine of
// the desktop's own, started when an update arrives and ended when its
// queue is empty: one desktop's update blocked in SetTags never holds up
// another's, and the driver never waits. Only the driver sends.
type updatePool struct {
	apply  func(tagUpdate)
	mu     sync.Mutex
	queues map[string][]tagUpdate // by desktop, while its goroutine runs; guarded by mu
	wg     sync.WaitGroup
}

func newUpdatePool(apply func(tagUpdate)) *updatePool {
	return &updatePool{apply: apply, queues: map[string][]tagUpdate{}}
}

func (p *updatePool) send(u tagUpdate) {
	p.mu.Lock()
	q, running := p.queues[u.name]
	p.queues[u.name] = append(q, u)
	p.mu.Unlock()
	if !running {
		p.wg.Add(1)
		go p.serve(u.name)
	}
}

func (p *updatePool) serve(name string) {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		q := p.queues[name]
		if len(q) == 0 {
			delete(p.queues, name)
			p.mu.Unlock()
			return
		}
		u := q[0]
		q[0] = tagUpdate{}
		p.queues[name] = q[1:]
		p.mu.Unlock()
		p.apply(u)
	}
}

// close waits for every update sent to be applied.
func (p *updatePool) close() { p.wg.Wait() }
