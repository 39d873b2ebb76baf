package consensus

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/chiffon-dev/chiffon/internal/fleet"
)

// WorkStatus is where a work item stands in its lifecycle:
//
//	pending ──assign──▶ assigned ──▶ running ──▶ succeeded | failed
//	   ▲                   │            │
//	   └──── requeue ──────┴────────────┘   (node lost; up to MaxAttempts)
//	pending ──deadline──▶ failed ("no capacity")
type WorkStatus string

// The work statuses.
const (
	// WorkPending: recorded, waiting for a node with room.
	WorkPending WorkStatus = "pending"
	// WorkAssigned: placed on a node; the leader is delivering it.
	WorkAssigned WorkStatus = "assigned"
	// WorkRunning: the node has accepted it and runs its handler.
	WorkRunning WorkStatus = "running"
	// WorkSucceeded: the handler exited 0.
	WorkSucceeded WorkStatus = "succeeded"
	// WorkFailed: the handler failed, or the work could not be placed or
	// outlived its attempts.
	WorkFailed WorkStatus = "failed"
)

// WorkStatuses lists every WorkStatus in lifecycle order.
var WorkStatuses = []WorkStatus{WorkPending, WorkAssigned, WorkRunning, WorkSucceeded, WorkFailed}

// Valid reports whether s is a known status.
func (s WorkStatus) Valid() bool { return slices.Contains(WorkStatuses, s) }

// Terminal reports whether s is final (succeeded or failed).
func (s WorkStatus) Terminal() bool { return s == WorkSucceeded || s == WorkFailed }

// Active reports whether s holds (or waits for) capacity: pending, assigned
// or running.
func (s WorkStatus) Active() bool { return s == WorkPending || s == WorkAssigned || s == WorkRunning }

// Requirements is what a work item needs of the node that runs it. Zero
// values mean "no requirement".
type Requirements struct {
	// MinGPUVRAMGB is the free VRAM the work needs on one GPU, in GB. It is
	// reserved on that GPU while the work is assigned or running.
	MinGPUVRAMGB float64 `json:"min_gpu_vram_gb,omitempty"`
	// MinCPUCores is the idle cores the work needs; reserved likewise.
	MinCPUCores float64 `json:"min_cpu_cores,omitempty"`
	// GPUType, when set, is the GPU vendor the node must have (nvidia, amd,
	// intel). A work item with a GPUType or MinGPUVRAMGB gets a GPU.
	GPUType string `json:"gpu_type,omitempty"`
}

// NeedsGPU reports whether the work must be given a GPU.
func (r Requirements) NeedsGPU() bool {
	return r.MinGPUVRAMGB > 0 || (r.GPUType != "" && r.GPUType != fleet.GPUTypeNone)
}

// Validate checks that the requirements are finite and not negative.
func (r Requirements) Validate() error {
	for name, v := range map[string]float64{"min_gpu_vram_gb": r.MinGPUVRAMGB, "min_cpu_cores": r.MinCPUCores} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return fmt.Errorf("%s must be a number >= 0, not %v", name, v)
		}
	}
	return nil
}

// NoGPU is the GPUIndex of work that was given no GPU.
const NoGPU = -1

// WorkItem is one unit of work in the registry. The leader decides every
// field through SubmitWork, UpdateWork and MarkWorkPublished; the FSM sets
// CreateIndex and ModifyIndex.
type WorkItem struct {
	// WorkID is the producer's idempotency key.
	WorkID string `json:"work_id"`
	// Requirements are what the work needs.
	Requirements Requirements `json:"requirements"`
	// PinAgentID, when set, is the only node the work may run on.
	PinAgentID string `json:"pin_agent_id,omitempty"`
	// Payload is the request's payload, handed to the handler on stdin.
	Payload json.RawMessage `json:"payload,omitempty"`
	// ReplyTo and CorrelationID come from the AMQP request; the result goes
	// to ReplyTo (or the results queue) with CorrelationID.
	ReplyTo       string `json:"reply_to,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`

	// Status is where the work stands.
	Status WorkStatus `json:"status"`
	// Attempts counts placements so far; the current one is number Attempts.
	Attempts int `json:"attempts"`
	// MaxAttempts bounds placements: a node lost during the last one fails
	// the work.
	MaxAttempts int `json:"max_attempts"`
	// AgentID is the node of the current or last placement.
	AgentID string `json:"agent_id,omitempty"`
	// GPUIndex is the GPU given to the current or last placement, or NoGPU.
	GPUIndex int `json:"gpu_index"`
	// LeaseExpiresAt fences the current placement: the leader's clock at
	// the assignment plus its -work-lease. The desktop never starts the
	// attempt at or after this time (by its own clock), and the leader
	// re-places an attempt that had not started no sooner than one more
	// lease after it (the allowance for clock skew; node/dispatch
	// DESIGN.md). Zero: no lease (an entry written before leases).
	LeaseExpiresAt time.Time `json:"lease_expires_at,omitzero"`

	// Deadline is when pending work gives up waiting for capacity.
	Deadline time.Time `json:"deadline"`
	// SubmittedAt, AssignedAt, StartedAt and FinishedAt are the leader's
	// (or, for the last two, the node's) clock at each step.
	SubmittedAt time.Time `json:"submitted_at"`
	AssignedAt  time.Time `json:"assigned_at,omitzero"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`

	// ExitCode, Output and Error are the result: the handler's exit code
	// (-1 when it did not exit by itself), its capped stdout, and why it
	// failed.
	ExitCode int    `json:"exit_code"`
	Output   string `json:"output,omitempty"`
	Error    string `json:"error,omitempty"`
	// DeadLetter is set on failures that are also copied to the
	// dead-letter queue (no capacity, attempts exhausted).
	DeadLetter bool `json:"dead_letter,omitempty"`

	// Published is set once the broker confirmed the result (the outbox).
	Published   bool      `json:"published,omitempty"`
	PublishedAt time.Time `json:"published_at,omitzero"`

	// Events are what happened to the item besides its status changes,
	// oldest first (a wake-on-LAN sent for it).
	Events []WorkEvent `json:"events,omitempty"`

	// CreateIndex and ModifyIndex are the raft indexes of the item's
	// submission and last change, set by the FSM.
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// Clone returns a deep copy of w.
func (w WorkItem) Clone() WorkItem {
	w.Payload = slices.Clone(w.Payload)
	w.Events = slices.Clone(w.Events)
	return w
}

// validate checks what every stored item must have.
func (w WorkItem) validate() error {
	if w.WorkID == "" {
		return fmt.Errorf("work item without a work_id")
	}
	if err := w.Requirements.Validate(); err != nil {
		return fmt.Errorf("work %s: %v", w.WorkID, err)
	}
	return nil
}

// SubmitWork records new pending work. An item whose WorkID is already in
// the registry (in any status) is left as it is: submission is idempotent.
type SubmitWork struct {
	// At is the leader's clock.
	At time.Time `json:"at"`
	// Items are the new items; the FSM sets their Status to pending,
	// Attempts to 0 and SubmittedAt to At when unset.
	Items []WorkItem `json:"items"`
}

// Type implements Command.
func (SubmitWork) Type() CommandType { return CmdSubmitWork }

// Time implements Command.
func (c SubmitWork) Time() time.Time { return c.At }

func (c SubmitWork) validate() error {
	if c.At.IsZero() {
		return fmt.Errorf("%w: %s without a time", ErrBadCommand, CmdSubmitWork)
	}
	if len(c.Items) == 0 {
		return fmt.Errorf("%w: empty %s batch", ErrBadCommand, CmdSubmitWork)
	}
	for i, w := range c.Items {
		if err := w.validate(); err != nil {
			return fmt.Errorf("%w: %s item %d: %v", ErrBadCommand, CmdSubmitWork, i, err)
		}
		if w.MaxAttempts < 1 {
			return fmt.Errorf("%w: %s item %d: max_attempts %d < 1", ErrBadCommand, CmdSubmitWork, i, w.MaxAttempts)
		}
	}
	return nil
}

// WorkTransition moves one item to a new status. The FSM applies it only
// when it is legal from the item's current state, and ignores it otherwise
// (a stale or repeated transition), so every transition is idempotent:
//
//   - To assigned: from pending, with Attempt = the item's Attempts+1. Sets
//     AgentID, GPUIndex, LeaseExpiresAt, AssignedAt and Attempts; clears
//     the previous attempt's result fields.
//   - To running: from assigned, same Attempt. Sets StartedAt.
//   - To succeeded or failed with an AgentID (a node's result): from
//     assigned or running, same Attempt and same AgentID, so that the
//     result of an attempt the leader has requeued (fenced) is ignored.
//   - To succeeded or failed without an AgentID (the leader's verdict, e.g.
//     no capacity): from pending, assigned or running, same Attempt. Both
//     set FinishedAt, StartedAt (when given), ExitCode, Output, Error,
//     DeadLetter.
//   - To pending (requeue): from assigned or running, same Attempt. Sets
//     Error (why) and Deadline (when given); keeps Attempts. With Yielded
//     (the desktop handed the item back because its owner came back) it
//     also raises MaxAttempts by one: that attempt does not count.
type WorkTransition struct {
	WorkID string     `json:"work_id"`
	To     WorkStatus `json:"to"`
	// Attempt is the placement the transition is about (see above).
	Attempt int `json:"attempt"`

	// AgentID is the node of an assignment, or the node that reports a
	// result.
	AgentID  string `json:"agent_id,omitempty"`
	GPUIndex int    `json:"gpu_index,omitempty"`
	// LeaseExpiresAt is an assignment's lease (WorkItem.LeaseExpiresAt).
	LeaseExpiresAt time.Time `json:"lease_expires_at,omitzero"`
	StartedAt      time.Time `json:"started_at,omitzero"`
	FinishedAt     time.Time `json:"finished_at,omitzero"`
	Deadline       time.Time `json:"deadline,omitzero"`
	ExitCode       int       `json:"exit_code,omitempty"`
	Output         string    `json:"output,omitempty"`
	Error          string    `json:"error,omitempty"`
	DeadLetter     bool      `json:"dead_letter,omitempty"`
	// Yielded marks a requeue of an attempt the node handed back for its
	// owner (-owner-action requeue): the attempt is not counted.
	Yielded bool `json:"yielded,omitempty"`
}

// UpdateWork applies a batch of transitions, in order.
type UpdateWork struct {
	// At is the leader's clock.
	At time.Time `json:"at"`
	// Transitions are applied in order; illegal ones are skipped.
	Transitions []WorkTransition `json:"transitions"`
}

// Type implements Command.
func (UpdateWork) Type() CommandType { return CmdUpdateWork }

// Time implements Command.
func (c UpdateWork) Time() time.Time { return c.At }

func (c UpdateWork) validate() error {
	if c.At.IsZero() {
		return fmt.Errorf("%w: %s without a time", ErrBadCommand, CmdUpdateWork)
	}
	if len(c.Transitions) == 0 {
		return fmt.Errorf("%w: empty %s batch", ErrBadCommand, CmdUpdateWork)
	}
	for i, t := range c.Transitions {
		if t.WorkID == "" {
			return fmt.Errorf("%w: %s transition %d without a work_id", ErrBadCommand, CmdUpdateWork, i)
		}
		if !t.To.Valid() {
			return fmt.Errorf("%w: %s transition %d to unknown status %q", ErrBadCommand, CmdUpdateWork, i, t.To)
		}
		if t.To == WorkAssigned && t.AgentID == "" {
			return fmt.Errorf("%w: %s transition %d assigns %s to no agent", ErrBadCommand, CmdUpdateWork, i, t.WorkID)
		}
	}
	return nil
}

// MarkWorkPublished records that the broker confirmed the results of
// finished items (the outbox). Unknown or unfinished items are ignored.
type MarkWorkPublished struct {
	// At is the leader's clock.
	At time.Time `json:"at"`
	// WorkIDs are the items whose results were confirmed.
	WorkIDs []string `json:"work_ids"`
}

// Type implements Command.
func (MarkWorkPublished) Type() CommandType { return CmdMarkWorkPublished }

// Time implements Command.
func (c MarkWorkPublished) Time() time.Time { return c.At }

func (c MarkWorkPublished) validate() error {
	return validateIDs(CmdMarkWorkPublished, c.At, c.WorkIDs)
}

// DeleteWork forgets items, e.g. published results older than the
// retention. Unknown IDs are ignored. A deleted work_id is no longer a
// duplicate: a producer that resends it after this runs it again.
type DeleteWork struct {
	// At is the leader's clock.
	At time.Time `json:"at"`
	// WorkIDs are the items to forget.
	WorkIDs []string `json:"work_ids"`
}

// Type implements Command.
func (DeleteWork) Type() CommandType { return CmdDeleteWork }

// Time implements Command.
func (c DeleteWork) Time() time.Time { return c.At }

func (c DeleteWork) validate() error { return validateIDs(CmdDeleteWork, c.At, c.WorkIDs) }

func validateIDs(t CommandType, at time.Time, ids []string) error {
	if at.IsZero() {
		return fmt.Errorf("%w: %s without a time", ErrBadCommand, t)
	}
	if len(ids) == 0 {
		return fmt.Errorf("%w: empty %s batch", ErrBadCommand, t)
	}
	for i, id := range ids {
		if id == "" {
			return fmt.Errorf("%w: %s entry %d is empty", ErrBadCommand, t, i)
		}
	}
	return nil
}

var (
	_ Command = SubmitWork{}
	_ Command = UpdateWork{}
	_ Command = MarkWorkPublished{}
	_ Command = DeleteWork{}
)

// applyWorkLocked applies a work command at index. f.mu must be held. It
// costs O(batch).
func (f *FSM) applyWorkLocked(index uint64, c Command) {
	switch c := c.(type) {
	case SubmitWork:
		for _, w := range c.Items {
			if _, exists := f.work.get(w.WorkID); exists {
				continue // idempotent: the first submission wins
			}
			w.Status = WorkPending
			w.Attempts = 0
			w.AgentID = ""
			w.GPUIndex = NoGPU
			w.Published, w.PublishedAt = false, time.Time{}
			if w.SubmittedAt.IsZero() {
				w.SubmittedAt = c.At
			}
			w.CreateIndex, w.ModifyIndex = index, index
			f.work.put(w)
		}
	case UpdateWork:
		for _, t := range c.Transitions {
			w, ok := f.work.get(t.WorkID)
			if !ok {
				continue
			}
			if next, ok := transition(w, t, c.At); ok {
				next.ModifyIndex = index
				f.work.put(next)
			}
		}
	case MarkWorkPublished:
		for _, id := range c.WorkIDs {
			w, ok := f.work.get(id)
			if !ok || !w.Status.Terminal() || w.Published {
				continue
			}
			w.Published, w.PublishedAt, w.ModifyIndex = true, c.At, index
			f.work.put(w)
		}
	case DeleteWork:
		for _, id := range c.WorkIDs {
			f.work.remove(id)
		}
	}
}

// transition returns w after t, or false when t is not legal from w's state.
// Stored items are replaced, never mutated: w is a copy.
func transition(w WorkItem, t WorkTransition, at time.Time) (WorkItem, bool) {
	switch t.To {
	case WorkAssigned:
		if w.Status != WorkPending || t.Attempt != w.Attempts+1 || w.Attempts >= w.MaxAttempts {
			return w, false
		}
		w.Status, w.Attempts, w.AgentID, w.GPUIndex, w.AssignedAt = WorkAssigned, t.Attempt, t.AgentID, t.GPUIndex, at
		w.LeaseExpiresAt = t.LeaseExpiresAt
		w.StartedAt, w.FinishedAt, w.ExitCode, w.Output, w.Error = time.Time{}, time.Time{}, 0, "", ""
	case WorkRunning:
		if w.Status != WorkAssigned || t.Attempt != w.Attempts {
			return w, false
		}
		w.Status, w.StartedAt = WorkRunning, t.StartedAt
		if w.StartedAt.IsZero() {
			w.StartedAt = at
		}
	case WorkSucceeded, WorkFailed:
		if !w.Status.Active() || t.Attempt != w.Attempts {
			return w, false
		}
		if t.AgentID != "" && (w.Status == WorkPending || t.AgentID != w.AgentID) {
			return w, false // a fenced attempt's result
		}
		w.Status, w.ExitCode, w.Output, w.Error, w.DeadLetter = t.To, t.ExitCode, t.Output, t.Error, t.DeadLetter
		if !t.StartedAt.IsZero() {
			w.StartedAt = t.StartedAt
		}
		w.FinishedAt = t.FinishedAt
		if w.FinishedAt.IsZero() {
			w.FinishedAt = at
		}
	case WorkPending:
		if (w.Status != WorkAssigned && w.Status != WorkRunning) || t.Attempt != w.Attempts {
			return w, false
		}
		w.Status, w.Error = WorkPending, t.Error
		if t.Yielded {
			w.MaxAttempts++
		}
		if !t.Deadline.IsZero() {
			w.Deadline = t.Deadline
		}
	default:
		return w, false
	}
	return w, true
}

// GetWork returns a copy of the work item workID.
func (f *FSM) GetWork(workID string) (WorkItem, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	w, ok := f.work.get(workID)
	if !ok {
		return WorkItem{}, false
	}
	return w.Clone(), true
}

// ListWork returns copies of the work items for which keep returns true
// (all of them when keep is nil), oldest submission first (by CreateIndex,
// then WorkID). keep runs under the FSM's read lock: it must not call the
// FSM.
func (f *FSM) ListWork(keep func(*WorkItem) bool) []WorkItem {
	f.mu.RLock()
	var out []WorkItem
	for _, w := range f.work.items {
		if keep == nil || keep(&w) {
			out = append(out, w.Clone())
		}
	}
	f.mu.RUnlock()
	SortWork(out)
	return out
}

// WorkByStatus returns copies of the work items in any of statuses, in
// submission order. It costs O(matching items), however many finished
// items the registry retains.
func (f *FSM) WorkByStatus(statuses ...WorkStatus) []WorkItem {
	f.mu.RLock()
	defer f.mu.RUnlock()
	sets := make([]map[string]struct{}, 0, len(statuses))
	for i, s := range statuses {
		if set, ok := f.work.byStatus[s]; ok && !slices.Contains(statuses[:i], s) {
			sets = append(sets, set)
		}
	}
	return f.work.collect(sets...)
}

// WorkPage returns copies of at most limit work items (limit <= 0: no
// limit) in any of statuses (every item when none is given), in submission
// order, starting after the key after (the zero key: from the first). It
// also returns how many items match in all and whether more come after
// this page (ask again with the last item's key). Only the page's items
// are copied, so a page costs O(matching items) to order plus O(limit) to
// copy, however large the items are.
func (f *FSM) WorkPage(after WorkKey, limit int, statuses ...WorkStatus) (page []WorkItem, total int, more bool) {
	if len(statuses) == 0 {
		statuses = WorkStatuses
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	sets := make([]map[string]struct{}, 0, len(statuses))
	for i, s := range statuses {
		if set, ok := f.work.byStatus[s]; ok && !slices.Contains(statuses[:i], s) {
			sets = append(sets, set)
		}
	}
	return f.work.page(after, limit, sets...)
}

// FinishedRef is what retention needs to know of a finished work item.
type FinishedRef struct {
	WorkID     string
	FinishedAt time.Time
	Published  bool
}

// FinishedWork returns a FinishedRef for every succeeded or failed item, in
// no particular order. It copies no payload or output: at the retention
// cap that is 100,000 small structs rather than 100,000 items.
func (f *FSM) FinishedWork() []FinishedRef {
	f.mu.RLock()
	defer f.mu.RUnlock()
	done, failed := f.work.byStatus[WorkSucceeded], f.work.byStatus[WorkFailed]
	out := make([]FinishedRef, 0, len(done)+len(failed))
	for _, set := range []map[string]struct{}{done, failed} {
		for id := range set {
			w := f.work.items[id]
			out = append(out, FinishedRef{WorkID: id, FinishedAt: w.FinishedAt, Published: w.Published})
		}
	}
	return out
}

// UnpublishedWork returns copies of the finished items whose result the
// broker has not confirmed yet (the outbox), in submission order, in
// O(those items).
func (f *FSM) UnpublishedWork() []WorkItem {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.work.collect(f.work.unpublished)
}

// WorkCounts returns the number of work items in each status; every status
// is present. It costs O(number of statuses).
func (f *FSM) WorkCounts() map[WorkStatus]int {
	out := make(map[WorkStatus]int, len(WorkStatuses))
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, s := range WorkStatuses {
		out[s] = len(f.work.byStatus[s])
	}
	return out
}

// SortWork orders items by CreateIndex, then WorkID: submission order.
func SortWork(ws []WorkItem) {
	slices.SortFunc(ws, func(a, b WorkItem) int {
		if a.CreateIndex != b.CreateIndex {
			if a.CreateIndex < b.CreateIndex {
				return -1
			}
			return 1
		}
		return strings.Compare(a.WorkID, b.WorkID)
	})
}
