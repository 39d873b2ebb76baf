package consensus

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// snapshotVersion is the version of the registry snapshot format written by
// fsmSnapshot.Persist.
const snapshotVersion = 1

// FSM is the registry state machine that raft applies the log to. Its read
// methods are safe for concurrent use with Apply and return copies.
//
// Apply is deterministic: its result depends only on the entry and the
// current state, never on the clock, so every replica holds the same
// registry.
type FSM struct {
	mu sync.RWMutex
	// nodes is the registry by AgentID. Stored records are never mutated in
	// place, only replaced, so a snapshot may share them. Guarded by mu.
	nodes map[string]Record
	// work is the work items by WorkID, with indexes by status and of the
	// outbox; like nodes, stored items are replaced, never mutated.
	// Guarded by mu.
	work *workTable
	// index is the raft index of the last applied command (or of the
	// restored snapshot). Guarded by mu.
	index uint64
	// changed is closed, and replaced, on every change to index. Guarded by
	// mu.
	changed chan struct{}
	// beforeApply, when set (by this package's tests, before raft starts),
	// runs at the start of Apply, outside mu: a test holds an entry there
	// to make the FSM lag raft's commit index.
	beforeApply func(index uint64)
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an empty registry.
func NewFSM() *FSM {
	return &FSM{nodes: make(map[string]Record), work: newWorkTable(0), changed: make(chan struct{})}
}

// Apply applies one committed raft log entry. It implements raft.FSM.
//
// An UpsertNodes record takes ModifyIndex = the entry's index; it keeps the
// FirstSeenAt of the record it replaces, or takes the command's At when new
// and unset; an unset StatusChangedAt keeps the old value when the status is
// unchanged and otherwise takes At; it keeps the stored UnreachableSince
// of a known node, which only SetWorkReachability changes.
//
// Apply panics on an entry it cannot decode: a replica that skipped it would
// silently diverge from the others, which is worse than stopping.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil // raft hands the FSM only commands; be safe anyway
	}
	if f.beforeApply != nil {
		f.beforeApply(l.Index)
	}
	c, err := DecodeCommand(l.Data)
	if err != nil {
		panic(fmt.Sprintf("consensus: cannot apply raft log entry index=%d term=%d: %v", l.Index, l.Term, err))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch c := c.(type) {
	case UpsertNodes:
		f.upsertLocked(l.Index, c)
	case DeleteNodes:
		for _, id := range c.AgentIDs {
			delete(f.nodes, id)
		}
	case SetWorkReachability:
		if n, ok := f.nodes[c.AgentID]; ok {
			n.UnreachableSince = time.Time{}
			if c.Unreachable {
				n.UnreachableSince = c.Since
			}
			n.ModifyIndex = l.Index
			f.nodes[c.AgentID] = n
		}
	case SubmitWork, UpdateWork, MarkWorkPublished, DeleteWork:
		f.applyWorkLocked(l.Index, c)
	case WakeNode:
		f.applyWakeLocked(l.Index, c)
	default:
		// DecodeCommand only returns the types above.
		panic(fmt.Sprintf("consensus: raft log entry index=%d has unhandled command %s", l.Index, c.Type()))
	}
	f.setIndexLocked(l.Index)
	return nil
}

// upsertLocked stores a batch; it costs O(len(c.Nodes)). f.mu must be held.
func (f *FSM) upsertLocked(index uint64, c UpsertNodes) {
	for _, n := range c.Nodes {
		old, exists := f.nodes[n.AgentID]
		switch {
		case exists:
			n.FirstSeenAt = old.FirstSeenAt
		case n.FirstSeenAt.IsZero():
			n.FirstSeenAt = c.At
		}
		// Reachability is the dispatcher's (SetWorkReachability), not the
		// liveness reconciler's: an upsert never changes a stored one.
		if exists {
			n.UnreachableSince = old.UnreachableSince
			n.WakeSentAt = old.WakeSentAt // WakeNode's, likewise
		}
		if n.StatusChangedAt.IsZero() {
			if exists && old.Status == n.Status {
				n.StatusChangedAt = old.StatusChangedAt
			} else {
				n.StatusChangedAt = c.At
			}
		}
		n.ModifyIndex = index
		// The command was decoded for this call alone, so n's slices are
		// ours; no copy needed.
		f.nodes[n.AgentID] = n
	}
}

// setIndexLocked records a new applied index and wakes WaitIndex callers.
// f.mu must be held.
func (f *FSM) setIndexLocked(index uint64) {
	f.index = index
	close(f.changed)
	f.changed = make(chan struct{})
}

// Get returns a copy of the record for agentID.
func (f *FSM) Get(agentID string) (Record, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r, ok := f.nodes[agentID]
	if !ok {
		return Record{}, false
	}
	return r.Clone(), true
}

// List returns a copy of every record, sorted by AgentID.
func (f *FSM) List() []Record {
	f.mu.RLock()
	out := make([]Record, 0, len(f.nodes))
	for _, r := range f.nodes {
		out = append(out, r.Clone())
	}
	f.mu.RUnlock()
	sortRecords(out)
	return out
}

// Len returns the number of records.
func (f *FSM) Len() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.nodes)
}

// Index returns the raft index of the last applied command, or of the
// restored snapshot; 0 for an empty registry that has applied nothing.
func (f *FSM) Index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// Counts returns the number of records in each status. Every known status is
// present, with 0 when no record has it.
func (f *FSM) Counts() map[Status]int {
	out := make(map[Status]int, len(Statuses))
	for _, s := range Statuses {
		out[s] = 0
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, r := range f.nodes {
		out[r.Status]++
	}
	return out
}

// WaitIndex blocks until the applied index is greater than after, then
// returns it. It returns the current index and ctx's error if ctx ends
// first. It is the building block of blocking queries.
//
// The index may go down once, when an operator restores an older backup
// (Store.RestoreSnapshot); callers that wait in a loop should start again
// from 0 when they see a smaller index, as Consul's blocking queries do.
func (f *FSM) WaitIndex(ctx context.Context, after uint64) (uint64, error) {
	for {
		f.mu.RLock()
		index, changed := f.index, f.changed
		f.mu.RUnlock()
		if index > after {
			return index, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return index, ctx.Err()
		}
	}
}

// Snapshot returns a point-in-time copy of the registry. It implements
// raft.FSM: it only copies under the lock; Persist does the encoding and
// I/O.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &fsmSnapshot{index: f.index, nodes: make([]Record, 0, len(f.nodes)), work: make([]WorkItem, 0, len(f.work.items))}
	for _, r := range f.nodes {
		s.nodes = append(s.nodes, r) // shared: stored records are immutable
	}
	for _, w := range f.work.items {
		s.work = append(s.work, w) // likewise
	}
	return s, nil
}

// Restore replaces the registry with a snapshot written by Persist. It
// implements raft.FSM. The snapshot is decoded completely before anything
// changes, so a bad snapshot leaves the registry as it was.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	snap, err := decodeSnapshot(rc)
	if err != nil {
		return err
	}
	nodes := make(map[string]Record, len(snap.Nodes))
	for _, r := range snap.Nodes {
		nodes[r.AgentID] = r
	}
	work := newWorkTable(len(snap.Work))
	for _, w := range snap.Work {
		work.put(w)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes = nodes
	f.work = work
	f.setIndexLocked(snap.Index)
	return nil
}

// snapshotFile is the JSON form of a registry snapshot. Work was added
// without a version change: an older snapshot simply has none.
type snapshotFile struct {
	Version int        `json:"version"`
	Index   uint64     `json:"index"`
	Nodes   []Record   `json:"nodes"`
	Work    []WorkItem `json:"work,omitempty"`
}

func decodeSnapshot(r io.Reader) (snapshotFile, error) {
	var snap snapshotFile
	dec := json.NewDecoder(bufio.NewReader(r))
	if err := dec.Decode(&snap); err != nil {
		return snapshotFile{}, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	if snap.Version != snapshotVersion {
		return snapshotFile{}, fmt.Errorf("%w: version %d, want %d", ErrBadSnapshot, snap.Version, snapshotVersion)
	}
	for i, r := range snap.Nodes {
		if r.AgentID == "" {
			return snapshotFile{}, fmt.Errorf("%w: record %d without an agent_id", ErrBadSnapshot, i)
		}
	}
	for i, w := range snap.Work {
		if err := w.validate(); err != nil {
			return snapshotFile{}, fmt.Errorf("%w: work item %d: %v", ErrBadSnapshot, i, err)
		}
	}
	return snap, nil
}

// fsmSnapshot is a registry copy waiting to be persisted.
type fsmSnapshot struct {
	index uint64
	nodes []Record   // shared with the FSM; read only
	work  []WorkItem // likewise
}

// Persist writes the snapshot as JSON, records sorted by AgentID so that
// equal registries give equal bytes.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	nodes := slices.Clone(s.nodes)
	sortRecords(nodes)
	work := slices.Clone(s.work)
	SortWork(work)
	w := bufio.NewWriter(sink)
	err := json.NewEncoder(w).Encode(snapshotFile{Version: snapshotVersion, Index: s.index, Nodes: nodes, Work: work})
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist registry snapshot: %w", err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot; there is nothing to release.
func (s *fsmSnapshot) Release() {}

func sortRecords(rs []Record) {
	slices.SortFunc(rs, func(a, b Record) int { return strings.Compare(a.AgentID, b.AgentID) })
}
