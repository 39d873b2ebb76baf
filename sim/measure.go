package sim

import (
	"context"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip/simnet"
)

// Report is what a run measured. Every duration is in real seconds (wall
// time × TimeScale) unless its name says wall or ms; query latencies are
// wall-clock milliseconds, since an HTTP answer costs the same CPU at any
// scale. -1 means nothing was measured.
type Report struct {
	Desktops      int     `json:"desktops"`
	Orchestrators int     `json:"orchestrators"`
	TimeScale     float64 `json:"time_scale"`
	DurationS     float64 `json:"duration_s"`
	Loss          float64 `json:"loss"`
	// UDPLossOutside is Config.UDPLossOutside: UDP loss the host's
	// network applied (scripts/sim-loss.sh), not the simulator.
	UDPLossOutside float64 `json:"udp_loss_outside,omitempty"`
	LatencyMS      float64 `json:"latency_ms"`
	Seed           uint64  `json:"seed"`
	// GossipNodes and RetransmitMult are the gossip budget every node ran
	// with (memberlist's 3 and 4 unless Config set them).
	GossipNodes    int `json:"gossip_nodes"`
	RetransmitMult int `json:"retransmit_mult"`
	// PushTelemetry: the desktops also pushed their tags to the leader
	// (Config.PushTelemetry).
	PushTelemetry bool `json:"push_telemetry"`
	// PushesSent and PushFailures count, over the whole run, the pushes
	// a leader took and those no orchestrator took (retried).
	PushesSent   uint64 `json:"pushes_sent"`
	PushFailures uint64 `json:"push_failures"`

	// OrchestratorMode is "in-process" or "process" (Config).
	OrchestratorMode string `json:"orchestrator_mode"`

	// JoinWallS is how long the desktops took to join (wall); SettleRealS
	// from the first join until the registry had every desktop online.
	JoinWallS   float64 `json:"join_wall_s"`
	SettleRealS float64 `json:"settle_s"`

	// Killed desktops crashed; OfflineAfterS and SuspectAfterS hold, per
	// killed desktop in KilledNames' order, how long after its silence the
	// leader's registry called it offline and suspect (-1: never).
	Killed        int       `json:"killed"`
	KilledNames   []string  `json:"killed_names,omitempty"`
	OfflineAfterS []float64 `json:"offline_after_s"`
	SuspectAfterS []float64 `json:"suspect_after_s"`
	// KilledOnlineAgain counts killed desktops that the registry called
	// online again after their silence (a crashed node cannot answer, so
	// anything but 0 is a liveness bug).
	KilledOnlineAgain int `json:"killed_online_again"`
	// FalseSuspect and FalseOffline count desktops that never crashed,
	// left or were cut off, yet were suspect or offline in the registry at
	// some poll.
	FalseSuspect int `json:"false_suspect"`
	FalseOffline int `json:"false_offline"`
	// FalseSuspectAtS says when (real seconds into the measured part) each
	// false suspicion began, for the first 20.
	FalseSuspectAtS []float64 `json:"false_suspect_at_s,omitempty"`
	// Churned desktops left and rejoined; ChurnBackOnline of them were
	// online again at the end. Partitioned desktops were cut off;
	// PartitionBackOnline of them were online at the end, the last
	// PartitionHealS after the heal.
	Churned             int     `json:"churned"`
	ChurnBackOnline     int     `json:"churn_back_online"`
	Partitioned         int     `json:"partitioned"`
	PartitionBackOnline int     `json:"partition_back_online"`
	PartitionHealS      float64 `json:"partition_heal_s"`

	// RaftEntriesPerS is the leader's raft log growth per real second.
	RaftEntriesPerS float64 `json:"raft_entries_per_s"`
	// TagToRegistry*: from a desktop's tag change to the leader's registry
	// holding it (TagChanges made, TagChangesSeen of them observed).
	TagToRegistryP50S float64 `json:"tag_to_registry_p50_s"`
	TagToRegistryP99S float64 `json:"tag_to_registry_p99_s"`
	TagToRegistryMaxS float64 `json:"tag_to_registry_max_s"`
	// TagHops splits the tag latency by hop (pushes on; nil otherwise).
	TagHops        *TagHops `json:"tag_hops,omitempty"`
	TagChanges     int      `json:"tag_changes"`
	TagChangesSeen int      `json:"tag_changes_seen"`
	// Query*: GET /v1/agents/available-capacity on the leader.
	QueryP50MS float64 `json:"query_p50_ms"`
	QueryP99MS float64 `json:"query_p99_ms"`
	Queries    int     `json:"queries"`
	QueryFails int     `json:"query_failures"`
	// LeaderCPUPct is the leader's share of one core over the measured
	// part (wall). In-process: from a CPU profile of the goroutines it
	// started (labelled node=NAME); -1 when profiling was taken (go test
	// -cpuprofile). Process mode: the leader process's user + system
	// time (/proc/PID/stat). ProcessCPUPct is the sim process's.
	LeaderCPUPct  float64 `json:"leader_cpu_pct"`
	ProcessCPUPct float64 `json:"process_cpu_pct"`
	// LeaderRSSMiB and LeaderPeakRSSMiB are the leader process's resident
	// memory at the end and its peak (VmRSS, VmHWM of /proc/PID/status)
	// in process mode; -1 in-process, where every node shares the sim's
	// process and no figure is the leader's alone. LeaderPID is that
	// process (0 in-process).
	LeaderRSSMiB     float64 `json:"leader_rss_mib"`
	LeaderPeakRSSMiB float64 `json:"leader_peak_rss_mib"`
	LeaderPID        int     `json:"leader_pid,omitempty"`
	// ProcessRSSMiB and ProcessPeakRSSMiB are the sim process's resident
	// memory at the end and its peak (in-process: every desktop and
	// orchestrator; process mode: the desktops); GoHeapMiB its live Go
	// heap.
	ProcessRSSMiB     float64 `json:"process_rss_mib"`
	ProcessPeakRSSMiB float64 `json:"process_peak_rss_mib"`
	GoHeapMiB         float64 `json:"go_heap_mib"`
	// OrchestratorPIDs are the orchestrator processes (process mode), in
	// start order; they have been stopped when Run returns.
	OrchestratorPIDs []int `json:"orchestrator_pids,omitempty"`
	// SimStalls counts the times during the measured part that the
	// simulating process fell a second or more (of wall time) behind its
	// own clock, every node in it waiting for a CPU at once, and
	// SimMaxStallWallS is the longest such delay: a run with stalls
	// measured the machine as much as the fleet (DESIGN.md, "Whether the
	// simulator kept up"). StallTrace is the -stall-trace file, written
	// when there was a stall.
	SimStalls        int     `json:"sim_stalls"`
	SimMaxStallWallS float64 `json:"sim_max_stall_wall_s"`
	StallTrace       string  `json:"stall_trace,omitempty"`
	// Elections is how many raft terms began during the measured part.
	Elections int    `json:"elections"`
	Leader    string `json:"leader"`

	// Expected* are the figures the configuration promises, for
	// comparison: the offline clock (90 s), SWIM's expected first
	// detection (e/(e−1) ≈ 1.58 probe periods), memberlist's suspicion
	// timeout at this size.
	ExpectedOfflineS        float64 `json:"expected_offline_s"`
	SWIMFirstDetectionS     float64 `json:"swim_first_detection_s"`
	MemberlistSuspicionS    float64 `json:"memberlist_suspicion_s"`
	ExpectedSerfFailedS     float64 `json:"expected_serf_failed_s"`
	ProbeIntervalS          float64 `json:"probe_interval_s"`
	SuspicionMult           int     `json:"suspicion_mult"`
	SuspicionMaxTimeoutMult int     `json:"suspicion_max_timeout_mult"`

	Network simnet.Stats `json:"network"`
}

// change is one tag change a desktop made: the seq it carries in load 15.
type change struct {
	seq int
	at  time.Time
}

// watch is what the observer follows of one desktop. Guarded by
// observer.mu.
type watch struct {
	killedAt  time.Time
	suspectAt time.Time
	offlineAt time.Time
	// onlineAgain: killed, then online in the registry after it had been
	// suspect or offline.
	onlineAgain bool
	// excused: left, rejoining or cut off on purpose, so suspect and
	// offline are not false while it lasts.
	excused bool
	pending []change
	falseS  bool
	falseO  bool
}

// observer polls the leader's registry. The driver records changes and
// faults under mu; the observer's goroutine reads them there.
type observer struct {
	r     *run
	mu    sync.Mutex
	watch map[string]*watch // by desktop name; guarded by mu
	tagS  []float64         // guarded by mu
	seen  int               // guarded by mu
	made  int               // guarded by mu
	terms map[uint64]bool   // terms seen; guarded by mu
	// falseAt: when false suspicions began; guarded by mu.
	falseAt []float64
	// hs: the tag changes' hops (r.hops); guarded by mu.
	hs hopSamples
	// t0 is when the measured part began; set before the observer runs.
	t0 time.Time
}

func (o *observer) get(name string) *watch {
	w := o.watch[name]
	if w == nil {
		w = &watch{}
		o.watch[name] = w
	}
	return w
}

func (o *observer) changed(name string, seq int, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w := o.get(name)
	if w.excused {
		// Cut off or rejoining: its changes wait for the fault, not
		// for gossip.
		return
	}
	w.pending = append(w.pending, change{seq, at})
	o.made++
}

func (o *observer) setExcused(name string, v bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w := o.get(name)
	w.excused = v
	w.pending = nil // a node that leaves takes its unseen changes along
}

func (o *observer) killed(name string, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w := o.get(name)
	w.killedAt, w.pending = at, nil
}

// poll reads the leader's registry once.
func (o *observer) poll(now time.Time) {
	recs, ok := o.r.leaderRegistry()
	if !ok {
		return
	}
	// In-process the term is read at every poll; a process-mode poll
	// does not ask the leader's /metrics, and the run compares the terms
	// at its start and end instead (terms only grow).
	var term uint64
	if o.r.procs == nil {
		_, term, _ = o.r.leaderRaft()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if term > 0 {
		o.terms[term] = true
	}
	for i := range recs {
		rec := &recs[i]
		w := o.watch[rec.Name]
		if w == nil {
			continue
		}
		switch {
		case !w.killedAt.IsZero():
			if rec.Status == consensus.StatusOnline && !w.suspectAt.IsZero() {
				w.onlineAgain = true
			}
			if rec.Status == consensus.StatusSuspect && w.suspectAt.IsZero() {
				w.suspectAt = rec.StatusChangedAt
			}
			if rec.Status == consensus.StatusOffline && w.offlineAt.IsZero() {
				w.offlineAt = rec.StatusChangedAt
				if w.suspectAt.IsZero() {
					w.suspectAt = rec.StatusChangedAt
				}
			}
			continue
		case w.excused:
			continue
		case rec.Status == consensus.StatusSuspect || rec.Status == consensus.StatusOffline:
			if !w.falseS && len(o.falseAt) < 20 {
				o.falseAt = append(o.falseAt, rec.StatusChangedAt.Sub(o.t0).Seconds()*o.r.cfg.TimeScale)
			}
			w.falseS = true
			w.falseO = w.falseO || rec.Status == consensus.StatusOffline
		}
		if len(w.pending) == 0 {
			continue
		}
		seq := int(math.Round(rec.Metrics.CPULoad15Min * 100))
		for k := len(w.pending) - 1; k >= 0; k-- {
			if w.pending[k].seq%10000 != seq {
				continue
			}
			// The registry holds change k (and so every earlier one has
			// been overtaken): its time is the leader's plan time
			// (last_heartbeat_at moves with fresh metrics), else now.
			at := now
			if hb := rec.LastHeartbeatAt; hb.After(w.pending[k].at) && hb.Before(now) {
				at = hb
			}
			var offered, acked []time.Time
			if h := o.r.hops; h != nil {
				seqs := make([]int, k+1)
				for j, c := range w.pending[:k+1] {
					seqs[j] = c.seq % 10000
				}
				offered, acked = h.take(rec.Name, seqs)
			}
			for j, c := range w.pending[:k+1] {
				o.tagS = append(o.tagS, at.Sub(c.at).Seconds()*o.r.cfg.TimeScale)
				o.seen++
				switch {
				case offered == nil:
				case j < k:
					o.hs.overtaken = append(o.hs.overtaken, at.Sub(c.at).Seconds())
				default:
					o.hs.add(rec.Name, c.at, offered[j], acked[j], at)
				}
			}
			w.pending = slices.Delete(w.pending, 0, k+1)
			break
		}
	}
}

// run polls every interval until ctx ends.
func (o *observer) run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			o.poll(now)
		}
	}
}

// queries asks the leader for available capacity every interval until ctx
// ends and returns the latencies (ms) and failures.
func (r *run) queries(ctx context.Context, interval time.Duration) (lat []float64, fails int) {
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return lat, fails
		case <-tick.C:
		}
		addr := r.leaderAPIAddr()
		if addr == "" {
			fails++
			continue
		}
		t0 := time.Now()
		resp, err := client.Get("http://" + addr + "/v1/agents/available-capacity")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = errStatus(resp.StatusCode)
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				fails++
			}
			continue
		}
		lat = append(lat, ms(time.Since(t0)))
	}
}

type errStatus int

func (e errStatus) Error() string { return "HTTP " + strconv.Itoa(int(e)) }
