package consensus

import (
	"fmt"
	"time"
)

// WorkEventWake is the WorkEvent.Event of a wake-on-LAN packet sent to an
// asleep node because the item fitted only there.
const WorkEventWake = "wake"

// maxWorkEvents bounds WorkItem.Events: the oldest are dropped.
const maxWorkEvents = 16

// WorkEvent is one thing that happened to a work item besides a status
// change.
type WorkEvent struct {
	// At is the leader's clock.
	At time.Time `json:"at"`
	// Event is what happened (WorkEventWake).
	Event string `json:"event"`
	// AgentID is the node it concerns.
	AgentID string `json:"agent_id,omitempty"`
	// Detail says more, for people.
	Detail string `json:"detail,omitempty"`
}

// WakeNode records the leader's decision to wake an asleep node with a
// wake-on-LAN packet, before it sends the packet: Record.WakeSentAt takes
// At, and each pending item in WorkIDs gets a WorkEventWake event. Because
// the decision is in the log, a new leader sees when each node was last
// woken and does not send a burst of packets after a failover. Unknown
// nodes and items, and items no longer pending, are skipped.
type WakeNode struct {
	// At is the leader's clock.
	At time.Time `json:"at"`
	// AgentID is the node woken.
	AgentID string `json:"agent_id"`
	// MAC is the address the packet is for.
	MAC string `json:"mac,omitempty"`
	// WorkIDs are the pending items that fit only there.
	WorkIDs []string `json:"work_ids,omitempty"`
}

// Type implements Command.
func (WakeNode) Type() CommandType { return CmdWakeNode }

// Time implements Command.
func (c WakeNode) Time() time.Time { return c.At }

func (c WakeNode) validate() error {
	switch {
	case c.At.IsZero():
		return fmt.Errorf("%w: %s without a time", ErrBadCommand, CmdWakeNode)
	case c.AgentID == "":
		return fmt.Errorf("%w: %s without an agent_id", ErrBadCommand, CmdWakeNode)
	}
	for i, id := range c.WorkIDs {
		if id == "" {
			return fmt.Errorf("%w: %s work_id %d is empty", ErrBadCommand, CmdWakeNode, i)
		}
	}
	return nil
}

var _ Command = WakeNode{}

// applyWakeLocked applies c at index. f.mu must be held.
func (f *FSM) applyWakeLocked(index uint64, c WakeNode) {
	n, ok := f.nodes[c.AgentID]
	if !ok {
		return
	}
	n.WakeSentAt, n.ModifyIndex = c.At, index
	f.nodes[c.AgentID] = n
	detail := fmt.Sprintf("wake-on-LAN sent to %s (%s): the work fits only this asleep node", n.Name, c.MAC)
	for _, id := range c.WorkIDs {
		w, ok := f.work.get(id)
		if !ok || w.Status != WorkPending {
			continue
		}
		w = w.Clone()
		w.Events = append(w.Events, WorkEvent{At: c.At, Event: WorkEventWake, AgentID: c.AgentID, Detail: detail})
		if len(w.Events) > maxWorkEvents {
			w.Events = w.Events[len(w.Events)-maxWorkEvents:]
		}
		w.ModifyIndex = index
		f.work.put(w)
	}
}
