package consensus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// CommandType is the first byte of every raft log entry this package writes:
// it names the shape of the JSON body that follows.
//
// Entries stay in the log (and in snapshots' history) across upgrades, so a
// type's body may only grow by optional fields. A change that old replicas
// could misread needs a new type byte.
type CommandType uint8

// Command types. Values are part of the on-disk format: never renumber them.
const (
	// CmdUpsertNodes inserts or replaces a batch of registry records.
	CmdUpsertNodes CommandType = 1
	// CmdDeleteNodes removes a batch of records by agent ID (reaping).
	CmdDeleteNodes CommandType = 2
	// CmdSubmitWork records new pending work items (see work.go).
	CmdSubmitWork CommandType = 3
	// CmdUpdateWork moves work items through their lifecycle.
	CmdUpdateWork CommandType = 4
	// CmdMarkWorkPublished records results the broker confirmed.
	CmdMarkWorkPublished CommandType = 5
	// CmdDeleteWork forgets work items (retention).
	CmdDeleteWork CommandType = 6
	// CmdSetWorkReachability marks a node's work endpoint unreachable or
	// reachable again.
	CmdSetWorkReachability CommandType = 7
	// CmdWakeNode records that the leader sent a wake-on-LAN packet to an
	// asleep node for pending work (wake.go).
	CmdWakeNode CommandType = 8
)

// String returns the type's name, or its number when unknown.
func (t CommandType) String() string {
	switch t {
	case CmdUpsertNodes:
		return "upsert-nodes"
	case CmdDeleteNodes:
		return "delete-nodes"
	case CmdSubmitWork:
		return "submit-work"
	case CmdUpdateWork:
		return "update-work"
	case CmdMarkWorkPublished:
		return "mark-work-published"
	case CmdDeleteWork:
		return "delete-work"
	case CmdSetWorkReachability:
		return "set-work-reachability"
	case CmdWakeNode:
		return "wake-node"
	}
	return fmt.Sprintf("command-type(%d)", uint8(t))
}

// Command is a decision the leader writes to the raft log. The set of
// commands is closed: only this package's types implement it, so that every
// replica knows how to apply every entry.
type Command interface {
	// Type returns the command's envelope type.
	Type() CommandType
	// Time returns the leader's clock when it made the command; the FSM uses
	// it instead of reading its own clock.
	Time() time.Time

	validate() error
}

// UpsertNodes inserts or replaces a batch of records, computed by the leader.
// The FSM keeps an existing record's FirstSeenAt and sets ModifyIndex; see
// FSM.Apply for the other defaults it fills in.
type UpsertNodes struct {
	// At is the leader's clock when it built the batch.
	At time.Time `json:"at"`
	// Nodes are the records to store. A later record with the same AgentID
	// wins over an earlier one.
	Nodes []Record `json:"nodes"`
}

// Type implements Command.
func (UpsertNodes) Type() CommandType { return CmdUpsertNodes }

// Time implements Command.
func (c UpsertNodes) Time() time.Time { return c.At }

func (c UpsertNodes) validate() error {
	if c.At.IsZero() {
		return fmt.Errorf("%w: %s without a time", ErrBadCommand, CmdUpsertNodes)
	}
	if len(c.Nodes) == 0 {
		return fmt.Errorf("%w: empty %s batch", ErrBadCommand, CmdUpsertNodes)
	}
	for i, n := range c.Nodes {
		if n.AgentID == "" {
			return fmt.Errorf("%w: %s record %d without an agent_id", ErrBadCommand, CmdUpsertNodes, i)
		}
	}
	return nil
}

// DeleteNodes removes a batch of records, e.g. nodes offline for longer than
// the reap time. Unknown IDs are ignored.
type DeleteNodes struct {
	// At is the leader's clock when it built the batch.
	At time.Time `json:"at"`
	// AgentIDs are the records to remove.
	AgentIDs []string `json:"agent_ids"`
}

// Type implements Command.
func (DeleteNodes) Type() CommandType { return CmdDeleteNodes }

// Time implements Command.
func (c DeleteNodes) Time() time.Time { return c.At }

func (c DeleteNodes) validate() error {
	if c.At.IsZero() {
		return fmt.Errorf("%w: %s without a time", ErrBadCommand, CmdDeleteNodes)
	}
	if len(c.AgentIDs) == 0 {
		return fmt.Errorf("%w: empty %s batch", ErrBadCommand, CmdDeleteNodes)
	}
	for i, id := range c.AgentIDs {
		if id == "" {
			return fmt.Errorf("%w: %s entry %d is empty", ErrBadCommand, CmdDeleteNodes, i)
		}
	}
	return nil
}

// SetWorkReachability records whether the leader can reach a node's work
// endpoint (Record.UnreachableSince). An unknown AgentID is ignored.
type SetWorkReachability struct {
	// At is the leader's clock.
	At time.Time `json:"at"`
	// AgentID is the node.
	AgentID string `json:"agent_id"`
	// Unreachable marks the node unreachable since Since; false clears
	// the mark.
	Unreachable bool      `json:"unreachable,omitempty"`
	Since       time.Time `json:"since,omitzero"`
}

// Type implements Command.
func (SetWorkReachability) Type() CommandType { return CmdSetWorkReachability }

// Time implements Command.
func (c SetWorkReachability) Time() time.Time { return c.At }

func (c SetWorkReachability) validate() error {
	switch {
	case c.At.IsZero():
		return fmt.Errorf("%w: %s without a time", ErrBadCommand, CmdSetWorkReachability)
	case c.AgentID == "":
		return fmt.Errorf("%w: %s without an agent_id", ErrBadCommand, CmdSetWorkReachability)
	case c.Unreachable && c.Since.IsZero():
		return fmt.Errorf("%w: %s marks %s unreachable since no time", ErrBadCommand, CmdSetWorkReachability, c.AgentID)
	}
	return nil
}

// Both value and pointer forms are Commands.
var (
	_ Command = UpsertNodes{}
	_ Command = (*DeleteNodes)(nil)
	_ Command = SetWorkReachability{}
)

// EncodeCommand returns the raft log entry for c: one type byte, then c as
// JSON. It refuses a command that DecodeCommand would refuse, so nothing
// undecodable reaches the log.
func EncodeCommand(c Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil command", ErrBadCommand)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("%w: encode %s: %v", ErrBadCommand, c.Type(), err)
	}
	out := make([]byte, 0, 1+len(body))
	out = append(out, byte(c.Type()))
	return append(out, body...), nil
}

// DecodeCommand parses a raft log entry written by EncodeCommand. The
// result is a value (UpsertNodes, DeleteNodes, SubmitWork, ...), never a
// pointer. Every error wraps ErrBadCommand. Work payloads come back
// compacted, so that decoding what EncodeCommand wrote gives the same value.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrBadCommand, len(b))
	}
	t, body := CommandType(b[0]), b[1:]
	var (
		c   Command
		err error
	)
	switch t {
	case CmdUpsertNodes:
		var u UpsertNodes
		err = json.Unmarshal(body, &u)
		c = u
	case CmdDeleteNodes:
		var d DeleteNodes
		err = json.Unmarshal(body, &d)
		c = d
	case CmdSubmitWork:
		var w SubmitWork
		if err = json.Unmarshal(body, &w); err == nil {
			err = compactPayloads(w.Items)
		}
		c = w
	case CmdUpdateWork:
		var u UpdateWork
		err = json.Unmarshal(body, &u)
		c = u
	case CmdMarkWorkPublished:
		var m MarkWorkPublished
		err = json.Unmarshal(body, &m)
		c = m
	case CmdDeleteWork:
		var d DeleteWork
		err = json.Unmarshal(body, &d)
		c = d
	case CmdSetWorkReachability:
		var r SetWorkReachability
		err = json.Unmarshal(body, &r)
		c = r
	case CmdWakeNode:
		var w WakeNode
		err = json.Unmarshal(body, &w)
		c = w
	default:
		return nil, fmt.Errorf("%w: unknown type %d", ErrBadCommand, uint8(t))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: decode %s: %v", ErrBadCommand, t, err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// compactPayloads rewrites each item's payload without insignificant
// whitespace, as json.Marshal would write it.
func compactPayloads(items []WorkItem) error {
	for i := range items {
		if len(items[i].Payload) == 0 {
			continue
		}
		var b bytes.Buffer
		if err := json.Compact(&b, items[i].Payload); err != nil {
			return err
		}
		items[i].Payload = b.Bytes()
	}
	return nil
}
