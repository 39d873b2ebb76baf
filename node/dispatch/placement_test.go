package dispatch

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// desk builds an online desktop with a work handler, idle cores and GPUs
// with the given free VRAM.
func desk(id string, cores float64, freeVRAM ...float64) consensus.Record {
	r := consensus.Record{AgentID: id, Status: consensus.StatusOnline, WorkSlots: 4, WorkAddr: id + ":7380",
		Metrics: consensus.ResourceMetrics{CPUCoresAvailable: cores, GPUType: "none"}}
	for i, f := range freeVRAM {
		r.Metrics.GPUs = append(r.Metrics.GPUs, consensus.GPU{Index: i, VRAMFreeGB: f, VRAMTotalGB: 24})
		r.Metrics.GPUCount++
		r.Metrics.GPUType = "nvidia"
		r.Metrics.GPUVRAMMaxFreeGB = max(r.Metrics.GPUVRAMMaxFreeGB, f)
	}
	return r
}

func with(r consensus.Record, f func(*consensus.Record)) consensus.Record { f(&r); return r }

func pending(id string, vram, cores float64) consensus.WorkItem {
	return consensus.WorkItem{WorkID: id, Status: consensus.WorkPending, MaxAttempts: 3, GPUIndex: consensus.NoGPU,
		Requirements: consensus.Requirements{MinGPUVRAMGB: vram, MinCPUCores: cores}, Deadline: t0.Add(time.Minute)}
}

func placed(id, agent string, gpu int, vram, cores float64) consensus.WorkItem {
	w := pending(id, vram, cores)
	w.Status, w.AgentID, w.GPUIndex, w.Attempts = consensus.WorkRunning, agent, gpu, 1
	return w
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name  string
		nodes []consensus.Record
		items []consensus.WorkItem // already placed
		work  consensus.WorkItem
		want  Placement
		ok    bool
	}{
		{name: "best fit: least free VRAM that fits", nodes: []consensus.Record{desk("a", 8, 24), desk("b", 8, 10), desk("c", 8, 6)},
			work: pending("w", 8, 1), want: Placement{"b", 0}, ok: true},
		{name: "never on a desktop whose owner is active", nodes: []consensus.Record{
			with(desk("a", 8, 10), func(r *consensus.Record) { r.Owner = consensus.OwnerActive }), desk("b", 8, 24)},
			work: pending("w", 8, 1), want: Placement{"b", 0}, ok: true},
		{name: "an idle owner does not matter", nodes: []consensus.Record{
			with(desk("a", 8, 10), func(r *consensus.Record) { r.Owner = consensus.OwnerIdle }), desk("b", 8, 24)},
			work: pending("w", 8, 1), want: Placement{"a", 0}, ok: true},
		{name: "best GPU within a node", nodes: []consensus.Record{desk("a", 8, 24, 9, 12)},
			work: pending("w", 8, 1), want: Placement{"a", 1}, ok: true},
		{name: "reservations prevent double-booking the same VRAM", nodes: []consensus.Record{desk("a", 8, 10)},
			items: []consensus.WorkItem{placed("x", "a", 0, 8, 1)}, work: pending("w", 8, 1), ok: false},
		{name: "reservation moves work to another GPU", nodes: []consensus.Record{desk("a", 8, 10, 16)},
			items: []consensus.WorkItem{placed("x", "a", 0, 8, 1)}, work: pending("w", 8, 1), want: Placement{"a", 1}, ok: true},
		{name: "reserved cores count", nodes: []consensus.Record{desk("a", 4), desk("b", 3)},
			items: []consensus.WorkItem{placed("x", "a", consensus.NoGPU, 0, 2)}, work: pending("w", 0, 3), want: Placement{"b", consensus.NoGPU}, ok: true},
		{name: "suspect excluded", nodes: []consensus.Record{with(desk("a", 8, 24), func(r *consensus.Record) { r.Status = consensus.StatusSuspect })},
			work: pending("w", 8, 1), ok: false},
		{name: "offline excluded", nodes: []consensus.Record{with(desk("a", 8, 24), func(r *consensus.Record) { r.Status = consensus.StatusOffline })},
			work: pending("w", 8, 1), ok: false},
		{name: "left excluded", nodes: []consensus.Record{with(desk("a", 8, 24), func(r *consensus.Record) { r.Status = consensus.StatusLeft }), desk("b", 8, 24)},
			work: pending("w", 8, 1), want: Placement{"b", 0}, ok: true},
		{name: "no handler excluded", nodes: []consensus.Record{with(desk("a", 8, 24), func(r *consensus.Record) { r.WorkSlots = 0 })},
			work: pending("w", 0, 0), ok: false},
		{name: "slots full", nodes: []consensus.Record{with(desk("a", 8), func(r *consensus.Record) { r.WorkSlots = 1 })},
			items: []consensus.WorkItem{placed("x", "a", consensus.NoGPU, 0, 0)}, work: pending("w", 0, 0), ok: false},
		{name: "pinned", nodes: []consensus.Record{desk("a", 8, 10), desk("b", 8, 24)},
			work: with2(pending("w", 8, 1), func(w *consensus.WorkItem) { w.PinAgentID = "b" }), want: Placement{"b", 0}, ok: true},
		{name: "pinned to a node that does not fit", nodes: []consensus.Record{desk("a", 8, 10), desk("b", 8, 4)},
			work: with2(pending("w", 8, 1), func(w *consensus.WorkItem) { w.PinAgentID = "b" }), ok: false},
		{name: "gpu type", nodes: []consensus.Record{with(desk("a", 8, 10), func(r *consensus.Record) { r.Metrics.GPUType = "amd" }), desk("b", 8, 24)},
			work: with2(pending("w", 8, 1), func(w *consensus.WorkItem) { w.Requirements.GPUType = "nvidia" }), want: Placement{"b", 0}, ok: true},
		{name: "gpu type without VRAM still gets a GPU", nodes: []consensus.Record{desk("a", 8), desk("b", 8, 2)},
			work: with2(pending("w", 0, 0), func(w *consensus.WorkItem) { w.Requirements.GPUType = "nvidia" }), want: Placement{"b", 0}, ok: true},
		{name: "tie: more idle cores wins", nodes: []consensus.Record{desk("a", 4, 10), desk("b", 6, 10)},
			work: pending("w", 8, 1), want: Placement{"b", 0}, ok: true},
		{name: "tie: smallest agent id", nodes: []consensus.Record{desk("b", 4, 10), desk("a", 4, 10)},
			work: pending("w", 8, 1), want: Placement{"a", 0}, ok: true},
		{name: "tie: fewer items placed wins (work spreads)", nodes: []consensus.Record{desk("a", 4), desk("b", 4)},
			items: []consensus.WorkItem{placed("x", "a", consensus.NoGPU, 0, 0)}, work: pending("w", 0, 0),
			want: Placement{"b", consensus.NoGPU}, ok: true},
		{name: "cpu work prefers nodes without GPUs", nodes: []consensus.Record{desk("a", 8, 24), desk("b", 2)},
			work: pending("w", 0, 1), want: Placement{"b", consensus.NoGPU}, ok: true},
		{name: "aggregate-only GPU figures", nodes: []consensus.Record{with(desk("a", 8), func(r *consensus.Record) {
			r.Metrics.GPUCount, r.Metrics.GPUVRAMMaxFreeGB, r.Metrics.GPUType = 8, 40, "nvidia"
		})}, work: pending("w", 30, 1), want: Placement{"a", consensus.NoGPU}, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Place(tt.nodes, Reserved(tt.items), tt.work)
			if ok != tt.ok || (ok && got != tt.want) {
				t.Fatalf("Place = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func with2(w consensus.WorkItem, f func(*consensus.WorkItem)) consensus.WorkItem { f(&w); return w }

func TestPlan(t *testing.T) {
	now := t0.Add(30 * time.Second)
	offline := with(desk("gone", 8, 24), func(r *consensus.Record) { r.Status = consensus.StatusOffline })
	suspect := with(desk("sus", 8, 24), func(r *consensus.Record) { r.Status = consensus.StatusSuspect })
	lastTry := placed("last", "gone", 0, 8, 1)
	lastTry.Attempts = 3
	expired := pending("old", 100, 0)
	expired.Deadline = now
	tests := []struct {
		name  string
		nodes []consensus.Record
		items []consensus.WorkItem
		want  []consensus.WorkTransition
	}{
		{name: "two requests between heartbeats get different GPUs", nodes: []consensus.Record{desk("a", 8, 10, 10)},
			items: []consensus.WorkItem{pending("w1", 8, 1), pending("w2", 8, 1), pending("w3", 8, 1)},
			want: []consensus.WorkTransition{
				{WorkID: "w1", To: consensus.WorkAssigned, Attempt: 1, AgentID: "a", GPUIndex: 0},
				{WorkID: "w2", To: consensus.WorkAssigned, Attempt: 1, AgentID: "a", GPUIndex: 1},
			}},
		{name: "work on an offline node is requeued and placed again", nodes: []consensus.Record{offline, desk("a", 8, 10)},
			items: []consensus.WorkItem{placed("w", "gone", 0, 8, 1)},
			want: []consensus.WorkTransition{
				{WorkID: "w", To: consensus.WorkPending, Attempt: 1, Error: "node gone went offline during attempt 1", Deadline: now.Add(time.Minute)},
				{WorkID: "w", To: consensus.WorkAssigned, Attempt: 2, AgentID: "a", GPUIndex: 0},
			}},
		{name: "work on a suspect node stays", nodes: []consensus.Record{suspect}, items: []consensus.WorkItem{placed("w", "sus", 0, 8, 1)}},
		{name: "last attempt lost fails", nodes: []consensus.Record{offline}, items: []consensus.WorkItem{lastTry},
			want: []consensus.WorkTransition{{WorkID: "last", To: consensus.WorkFailed, Attempt: 3, ExitCode: -1, FinishedAt: now, DeadLetter: true,
				Error: "node lost: node gone went offline during attempt 3, the last of 3 attempts"}}},
		{name: "deadline: no capacity", nodes: []consensus.Record{desk("a", 8, 10)}, items: []consensus.WorkItem{expired},
			want: []consensus.WorkTransition{{WorkID: "old", To: consensus.WorkFailed, ExitCode: -1, FinishedAt: now, DeadLetter: true,
				Error: "no capacity: no node met the requirements before the deadline"}}},
		{name: "waiting work stays pending", nodes: []consensus.Record{desk("a", 8, 4)}, items: []consensus.WorkItem{pending("w", 8, 1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Plan(now, tt.nodes, tt.items, time.Minute)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Plan =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// FuzzPlan checks, for arbitrary nodes and requests, that placements never
// exceed capacity: after placing everything it can (several rounds, as
// the leader would between heartbeats), the reservations on every GPU stay
// within its free VRAM, on every node within its idle cores and slots, and
// only online nodes with a handler get work.
func FuzzPlan(f *testing.F) {
	f.Add([]byte{3, 10, 20, 8, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{1, 255, 0, 0, 0, 7, 7, 7, 7, 7, 7, 7, 7})
	f.Fuzz(func(t *testing.T, b []byte) {
		next := func() int {
			if len(b) == 0 {
				return 0
			}
			v := int(b[0])
			b = b[1:]
			return v
		}
		var nodes []consensus.Record
		for i := range next()%6 + 1 {
			n := desk(fmt.Sprintf("n%d", i), float64(next()%17))
			n.Status = consensus.Statuses[next()%len(consensus.Statuses)]
			n.WorkSlots = next() % 4
			for g := range next() % 4 {
				n.Metrics.GPUs = append(n.Metrics.GPUs, consensus.GPU{Index: g, VRAMFreeGB: float64(next() % 25)})
				n.Metrics.GPUCount++
				n.Metrics.GPUType = "nvidia"
			}
			if next()%5 == 0 { // aggregate-only figures
				n.Metrics.GPUs = nil
				n.Metrics.GPUVRAMMaxFreeGB = float64(next() % 25)
			}
			nodes = append(nodes, n)
		}
		var items []consensus.WorkItem
		for i := range next()%12 + 1 {
			w := pending(fmt.Sprintf("w%02d", i), float64(next()%13), float64(next()%5)/2)
			if next()%4 == 0 {
				w.PinAgentID = fmt.Sprintf("n%d", next()%6)
			}
			w.CreateIndex = uint64(binary.LittleEndian.Uint16(append([]byte{byte(next())}, 0)))
			items = append(items, w)
		}
		byID := map[string]int{}
		for i, w := range items {
			byID[w.WorkID] = i
		}
		for round := 0; round < 3; round++ {
			for _, tr := range Plan(t0, nodes, items, time.Minute) {
				w := &items[byID[tr.WorkID]]
				if tr.To != consensus.WorkAssigned {
					t.Fatalf("round %d: unexpected transition %+v", round, tr)
				}
				if w.Status != consensus.WorkPending {
					t.Fatalf("placed %s twice", w.WorkID)
				}
				w.Status, w.Attempts, w.AgentID, w.GPUIndex = consensus.WorkAssigned, tr.Attempt, tr.AgentID, tr.GPUIndex
			}
		}
		res := Reserved(items)
		for _, n := range nodes {
			r := res[n.AgentID]
			if r.Items == 0 {
				continue
			}
			if n.Status != consensus.StatusOnline || n.WorkSlots == 0 {
				t.Fatalf("work placed on %s (%s, %d slots)", n.AgentID, n.Status, n.WorkSlots)
			}
			if r.Items > n.WorkSlots {
				t.Fatalf("%s: %d items in %d slots", n.AgentID, r.Items, n.WorkSlots)
			}
			if r.CPUCores > n.Metrics.CPUCoresAvailable {
				t.Fatalf("%s: %g cores reserved of %g", n.AgentID, r.CPUCores, n.Metrics.CPUCoresAvailable)
			}
			for _, g := range freeGPUs(n, Reservation{}) {
				if r.GPUVRAMGB[g.index] > g.free {
					t.Fatalf("%s GPU %d: %g GB reserved of %g free", n.AgentID, g.index, r.GPUVRAMGB[g.index], g.free)
				}
			}
		}
		for _, w := range items {
			if w.Status == consensus.WorkAssigned && w.PinAgentID != "" && w.AgentID != w.PinAgentID {
				t.Fatalf("%s pinned to %s placed on %s", w.WorkID, w.PinAgentID, w.AgentID)
			}
		}
	})
}
