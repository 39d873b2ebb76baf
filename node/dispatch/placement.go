package dispatch

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/fleet"
)

// This file is pure: no I/O and no clock. The time is passed in.

// Reservation is the capacity that work already placed on one node holds
// until it finishes: every assigned or running item reserves its
// MinCPUCores and, on its GPU, its MinGPUVRAMGB.
type Reservation struct {
	// Items is the number of assigned or running items (each takes one of
	// the node's WorkSlots).
	Items int `json:"items"`
	// CPUCores is the sum of the items' MinCPUCores.
	CPUCores float64 `json:"cpu_cores"`
	// GPUVRAMGB is the sum of the items' MinGPUVRAMGB by GPU index
	// (consensus.NoGPU when the node's per-GPU detail is unknown).
	GPUVRAMGB map[int]float64 `json:"gpu_vram_gb,omitempty"`
	// VRAMHolds are the same items' holds one by one, by GPU index, with
	// when they were placed and started: the VRAM ledger
	// (fleet.GPULedger) needs them to tell which ones the node's sample
	// already shows.
	VRAMHolds map[int][]fleet.VRAMHold `json:"-"`
}

// add adds w's reservation on gpu (sign 1) or takes it off (sign -1).
// placedAt and startedAt are the hold's times (see fleet.VRAMHold).
func (r *Reservation) add(w consensus.WorkItem, gpu int, sign float64, placedAt, startedAt time.Time) {
	r.Items += int(sign)
	r.CPUCores += sign * w.Requirements.MinCPUCores
	if !w.Requirements.NeedsGPU() {
		return
	}
	if r.GPUVRAMGB == nil {
		r.GPUVRAMGB, r.VRAMHolds = map[int]float64{}, map[int][]fleet.VRAMHold{}
	}
	r.GPUVRAMGB[gpu] += sign * w.Requirements.MinGPUVRAMGB
	if sign > 0 {
		r.VRAMHolds[gpu] = append(r.VRAMHolds[gpu], fleet.VRAMHold{WorkID: w.WorkID,
			GB: w.Requirements.MinGPUVRAMGB, PlacedAt: placedAt, StartedAt: startedAt})
		return
	}
	// A fresh slice: the caller's copy of the Reservation shares the map.
	r.VRAMHolds[gpu] = slices.DeleteFunc(slices.Clone(r.VRAMHolds[gpu]),
		func(h fleet.VRAMHold) bool { return h.WorkID == w.WorkID })
}

// Reserved sums the reservations of assigned and running items by agent
// ID, and lists their VRAM holds (placed at AssignedAt; started at
// StartedAt for running items only). The HTTP API subtracts the cores from
// a node's reported idle cores and offers VRAM by the ledger
// (fleet.GPULedger), as placement does, to show what new work could still
// get.
func Reserved(items []consensus.WorkItem) map[string]Reservation {
	out := map[string]Reservation{}
	for _, w := range items {
		if w.Status != consensus.WorkAssigned && w.Status != consensus.WorkRunning {
			continue
		}
		r := out[w.AgentID]
		started := w.StartedAt
		if w.Status != consensus.WorkRunning {
			started = time.Time{}
		}
		r.add(w, w.GPUIndex, 1, w.AssignedAt, started)
		out[w.AgentID] = r
	}
	return out
}

// Placement is where a work item runs.
type Placement struct {
	// AgentID is the node.
	AgentID string
	// GPUIndex is the GPU the work gets (its CUDA_VISIBLE_DEVICES), or
	// consensus.NoGPU for work that needs none or when the node reports
	// only aggregate GPU figures.
	GPUIndex int
}

// gpuFree is one GPU's VRAM as the ledger offers it: free is its
// fleet.GPULedger.Balance (negative when the GPU is over-committed).
type gpuFree struct {
	index int
	free  float64
}

// freeGPUs lists a node's GPUs with the VRAM the ledger offers on each
// (fleet.GPULedger). A node whose tags carried no per-GPU detail shows one
// GPU of unknown index with its largest single-GPU free VRAM (and the
// node's total VRAM as its total).
func freeGPUs(n consensus.Record, res Reservation) []gpuFree {
	m := n.Metrics
	ledger := func(total, free float64, gpu int) fleet.GPULedger {
		// SampledAt is the desktop's own sample time (tag "ts"): a hold
		// whose work started before it is inside the sample's use. The
		// desktop keeps its -owner-vram-headroom-gb out of the free
		// figures it gossips, so no headroom is kept here a second time.
		return fleet.GPULedger{TotalGB: total, FreeGB: free, SampledAt: n.SampledAt, HeadroomGB: 0,
			Holds: res.VRAMHolds[gpu]}
	}
	var out []gpuFree
	if len(m.GPUs) > 0 {
		for _, g := range m.GPUs {
			out = append(out, gpuFree{g.Index, ledger(g.VRAMTotalGB, g.VRAMFreeGB, g.Index).Balance()})
		}
		return out
	}
	if m.GPUCount > 0 {
		out = append(out, gpuFree{consensus.NoGPU, ledger(m.GPUVRAMTotalGB, m.GPUVRAMMaxFreeGB, consensus.NoGPU).Balance()})
	}
	return out
}

// Eligible reports whether node n may take work w now, given what is
// already reserved on it, and on which GPU; the reason says why not. A node
// is eligible when it is online (never suspect, offline or left), reachable
// (the leader's calls to its work endpoint have not been failing for
// -work-unreachable-after: consensus.Record.UnreachableSince), has a work
// handler (WorkSlots > 0) with a free slot and a work address, is not in
// use by its owner (consensus.Record.Owner is not active), matches the
// pin and the GPU type, and has MinCPUCores idle cores and, on one GPU,
// MinGPUVRAMGB offered by the VRAM ledger (fleet.GPULedger: free VRAM
// after reservations); work that asks for a GPU but no VRAM is kept off a
// GPU the ledger finds over-committed. Among fitting GPUs it picks the one
// with the least offered VRAM (best fit), then the lowest index.
func Eligible(n consensus.Record, res Reservation, w consensus.WorkItem) (gpu int, ok bool, reason string) {
	req := w.Requirements
	switch {
	case w.PinAgentID != "" && n.AgentID != w.PinAgentID:
		return 0, false, "not the pinned node"
	case n.Status != consensus.StatusOnline:
		return 0, false, "node is " + string(n.Status)
	case !n.Reachable():
		return 0, false, "node's work endpoint is unreachable"
	case n.WorkSlots <= 0 || n.WorkAddr == "":
		return 0, false, "node has no work handler"
	case n.Owner == consensus.OwnerActive:
		return 0, false, "node's owner is active"
	case res.Items >= n.WorkSlots:
		return 0, false, "node's work slots are full"
	case req.GPUType != "" && !strings.EqualFold(req.GPUType, n.Metrics.GPUType):
		return 0, false, fmt.Sprintf("gpu type %s, want %s", n.Metrics.GPUType, req.GPUType)
	case req.MinCPUCores > 0 && n.Metrics.CPUCoresAvailable-res.CPUCores < req.MinCPUCores:
		return 0, false, "not enough idle cores"
	}
	if !req.NeedsGPU() {
		return consensus.NoGPU, true, ""
	}
	best, found := gpuFree{}, false
	for _, g := range freeGPUs(n, res) {
		if g.free < req.MinGPUVRAMGB || (req.MinGPUVRAMGB == 0 && g.free < 0) {
			continue
		}
		if !found || g.free < best.free || (g.free == best.free && g.index < best.index) {
			best, found = g, true
		}
	}
	if !found {
		return 0, false, "not enough free VRAM on one GPU"
	}
	return best.index, true, ""
}

// Place picks the node for w among nodes, given the reservations by agent
// ID, or returns false when none fits now. The choice is deterministic:
//
//   - stable nodes first: the lowest flap bucket (FlapBucket of the
//     node's FlapScore, which the caller has decayed to now; see
//     WithFlapScoresAt), so a desktop that keeps dropping off the network
//     gets work only when no steadier one fits;
//   - work that needs a GPU goes where the chosen GPU has the least free
//     VRAM that still fits (best fit: big GPUs stay free for big work);
//   - work that needs no GPU prefers nodes with fewer GPUs (keeping GPU
//     nodes for GPU work);
//   - then the node with the most idle cores after reservations;
//   - then the node with the fewest items placed on it (so equal work
//     spreads over equal desktops instead of filling one first);
//   - then the smallest agent ID.
func Place(nodes []consensus.Record, reserved map[string]Reservation, w consensus.WorkItem) (Placement, bool) {
	type cand struct {
		p       Placement
		flaps   int
		gpuFree float64
		gpus    int
		cores   float64
		items   int
	}
	var best cand
	found := false
	for _, n := range nodes {
		res := reserved[n.AgentID]
		gpu, ok, _ := Eligible(n, res, w)
		if !ok {
			continue
		}
		c := cand{p: Placement{AgentID: n.AgentID, GPUIndex: gpu}, flaps: FlapBucket(n.FlapScore), gpus: n.Metrics.GPUCount,
			cores: n.Metrics.CPUCoresAvailable - res.CPUCores, items: res.Items}
		if w.Requirements.NeedsGPU() {
			for _, g := range freeGPUs(n, res) {
				if g.index == gpu {
					c.gpuFree = g.free
				}
			}
		}
		if !found || c.flaps < best.flaps || c.flaps == best.flaps && better(c.gpuFree, best.gpuFree, c.gpus, best.gpus, c.cores, best.cores, c.items, best.items, c.p.AgentID, best.p.AgentID) {
			best, found = c, true
		}
	}
	return best.p, found
}

// FlapBucket is how placement ranks a flap score (consensus.Record's,
// decayed to now): the whole number of flaps, 0 for a node whose score has
// decayed below 1. Buckets, not the score itself, so that the other rules
// (best fit, spreading) still decide among nodes that flapped about as
// much, and one flap's trace long ago does not outweigh them.
func FlapBucket(score float64) int {
	if score < 1 {
		return 0
	}
	return int(min(score, 1<<20))
}

// WithFlapScoresAt returns copies of nodes whose FlapScore is decayed from
// their StatusChangedAt to now at halfLife (the registry stores it as of
// the last status change; consensus.Record.FlapScoreAt), for Plan and
// Place.
func WithFlapScoresAt(nodes []consensus.Record, now time.Time, halfLife time.Duration) []consensus.Record {
	out := slices.Clone(nodes)
	for i := range out {
		out[i].FlapScore = out[i].FlapScoreAt(now, halfLife)
	}
	return out
}

// better orders candidates: less GPU free (best fit), fewer GPUs, more
// cores, fewer items placed, smaller agent ID. Only one of the first two
// differs by work kind: GPU-less work has gpuFree 0 everywhere, GPU work
// compares gpuFree first.
func better(gfA, gfB float64, gA, gB int, cA, cB float64, iA, iB int, idA, idB string) bool {
	if c := cmp.Compare(gfA, gfB); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(gA, gB); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(cA, cB); c != 0 {
		return c > 0
	}
	if iA != iB {
		return iA < iB
	}
	return idA < idB
}

// Reasons written into failed work items' Error.
const (
	// ReasonNoCapacity: no node could take the work before its deadline.
	ReasonNoCapacity = "no capacity"
	// ReasonNodeLost: the node running the last allowed attempt went
	// offline or left.
	ReasonNodeLost = "node lost"
	// ReasonAttempts: the work was requeued after its last attempt.
	ReasonAttempts = "attempts exhausted"
)

// Plan decides, at time now, what the leader should change in the
// registry's work (nodes' flap scores as of now: WithFlapScoresAt): it requeues active work whose node went offline or left,
// vanished from the registry or is unreachable — or fails it after its last
// attempt —,
// fails pending work past its deadline ("no capacity"), and places pending
// work, oldest first, on nodes that fit after the reservations of work
// already placed and of the placements it makes in this same plan. Work on
// a suspect node is left alone: suspicion is often a blip. Requeueing fences
// the attempt (its result is ignored from then on, and the next placement is
// a higher attempt); an assigned attempt that may not have started is
// requeued only once its lease is safely over (FenceClearAt), so that a
// frozen desktop that wakes up late cannot start it.
//
// requeueWait is the pending deadline given to requeued work (counted from
// now). The result is empty when nothing needs to change; transitions are
// in a deterministic order.
func Plan(now time.Time, nodes []consensus.Record, items []consensus.WorkItem, requeueWait time.Duration) []consensus.WorkTransition {
	items = slices.Clone(items)
	consensus.SortWork(items)
	byID := make(map[string]consensus.Record, len(nodes))
	for _, n := range nodes {
		byID[n.AgentID] = n
	}
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b consensus.Record) int { return strings.Compare(a.AgentID, b.AgentID) })
	reserved := Reserved(items)
	var out []consensus.WorkTransition

	// Work on lost nodes first, so that its reservation is released and
	// it competes for capacity in its submission order below.
	for i, w := range items {
		if w.Status != consensus.WorkAssigned && w.Status != consensus.WorkRunning {
			continue
		}
		n, known := byID[w.AgentID]
		if known && n.Status != consensus.StatusOffline && n.Status != consensus.StatusLeft && n.Reachable() {
			continue
		}
		if w.Status == consensus.WorkAssigned && now.Before(FenceClearAt(w)) {
			continue // its lease may still let the desktop start it
		}
		res := reserved[w.AgentID]
		res.add(w, w.GPUIndex, -1, time.Time{}, time.Time{})
		reserved[w.AgentID] = res
		why := fmt.Sprintf("node %s went offline during attempt %d", w.AgentID, w.Attempts)
		if known && n.Status == consensus.StatusLeft {
			why = fmt.Sprintf("node %s left during attempt %d", w.AgentID, w.Attempts)
		} else if !known {
			why = fmt.Sprintf("node %s is no longer in the registry (attempt %d)", w.AgentID, w.Attempts)
		} else if n.Status != consensus.StatusOffline {
			why = fmt.Sprintf("node %s's work endpoint has been unreachable since %s (attempt %d)", w.AgentID,
				n.UnreachableSince.UTC().Format(time.RFC3339), w.Attempts)
		}
		if w.Attempts >= w.MaxAttempts {
			out = append(out, consensus.WorkTransition{WorkID: w.WorkID, To: consensus.WorkFailed, Attempt: w.Attempts,
				ExitCode: -1, FinishedAt: now, DeadLetter: true,
				Error: fmt.Sprintf("%s: %s, the last of %d attempts", ReasonNodeLost, why, w.MaxAttempts)})
			items[i].Status = consensus.WorkFailed
			continue
		}
		out = append(out, consensus.WorkTransition{WorkID: w.WorkID, To: consensus.WorkPending, Attempt: w.Attempts,
			Error: why, Deadline: now.Add(requeueWait)})
		items[i].Status = consensus.WorkPending
	}
	for _, w := range items {
		if w.Status != consensus.WorkPending {
			continue
		}
		if w.Attempts >= w.MaxAttempts {
			out = append(out, consensus.WorkTransition{WorkID: w.WorkID, To: consensus.WorkFailed, Attempt: w.Attempts,
				ExitCode: -1, FinishedAt: now, DeadLetter: true,
				Error: fmt.Sprintf("%s: %d of %d attempts used; last: %s", ReasonAttempts, w.Attempts, w.MaxAttempts, w.Error)})
			continue
		}
		if !now.Before(w.Deadline) {
			out = append(out, consensus.WorkTransition{WorkID: w.WorkID, To: consensus.WorkFailed, Attempt: w.Attempts,
				ExitCode: -1, FinishedAt: now, DeadLetter: true, Error: noCapacityError(w)})
			continue
		}
		p, ok := Place(sorted, reserved, w)
		if !ok {
			continue
		}
		res := reserved[p.AgentID]
		res.add(w, p.GPUIndex, 1, now, time.Time{})
		reserved[p.AgentID] = res
		out = append(out, consensus.WorkTransition{WorkID: w.WorkID, To: consensus.WorkAssigned, Attempt: w.Attempts + 1,
			AgentID: p.AgentID, GPUIndex: p.GPUIndex})
	}
	return out
}

// FenceClearAt is when an assigned attempt of w that may not have started
// can no longer start on its desktop, as the leader's clock sees it: one
// lease after the lease's end, the allowance for the desktop's clock being
// behind the leader's by up to the lease (node/dispatch DESIGN.md). Before
// leases (zero LeaseExpiresAt) it is the zero time: at once.
func FenceClearAt(w consensus.WorkItem) time.Time {
	if w.LeaseExpiresAt.IsZero() {
		return time.Time{}
	}
	return w.LeaseExpiresAt.Add(max(w.LeaseExpiresAt.Sub(w.AssignedAt), 0))
}

func noCapacityError(w consensus.WorkItem) string {
	s := ReasonNoCapacity + ": no node met the requirements before the deadline"
	if w.PinAgentID != "" {
		s += " (pinned to " + w.PinAgentID + ")"
	}
	if w.Error != "" {
		s += "; earlier: " + w.Error
	}
	return s
}
