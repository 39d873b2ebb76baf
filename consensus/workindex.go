package consensus

import (
	"cmp"
	"container/heap"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// workTable is the FSM's work items by work_id, with the indexes the
// leader reads on every registry change: the items in each status and the
// finished items whose result the broker has not confirmed yet (the
// outbox). Finished, published items stay in the table for the retention
// period; without these indexes the planner and the outbox would scan
// them all on every change, so the cost of each step would grow with
// retention rather than with the work in flight.
//
// Stored items are replaced, never mutated. A workTable is guarded by the
// FSM's mutex.
type workTable struct {
	items map[string]WorkItem
	// byStatus holds the work_ids in each status.
	byStatus map[WorkStatus]map[string]struct{}
	// unpublished holds the work_ids of finished items not yet Published.
	unpublished map[string]struct{}
}

func newWorkTable(capacity int) *workTable {
	t := &workTable{items: make(map[string]WorkItem, capacity), byStatus: make(map[WorkStatus]map[string]struct{}, len(WorkStatuses)),
		unpublished: make(map[string]struct{})}
	for _, s := range WorkStatuses {
		t.byStatus[s] = make(map[string]struct{})
	}
	return t
}

func (t *workTable) get(id string) (WorkItem, bool) {
	w, ok := t.items[id]
	return w, ok
}

// put stores w, replacing any item with its work_id, and keeps the
// indexes in step.
func (t *workTable) put(w WorkItem) {
	t.unindex(w.WorkID)
	t.items[w.WorkID] = w
	if set, ok := t.byStatus[w.Status]; ok {
		set[w.WorkID] = struct{}{}
	}
	if w.Status.Terminal() && !w.Published {
		t.unpublished[w.WorkID] = struct{}{}
	}
}

// remove forgets id (a no-op when unknown).
func (t *workTable) remove(id string) {
	t.unindex(id)
	delete(t.items, id)
}

func (t *workTable) unindex(id string) {
	old, ok := t.items[id]
	if !ok {
		return
	}
	if set, ok := t.byStatus[old.Status]; ok {
		delete(set, id)
	}
	delete(t.unpublished, id)
}

// collect returns copies of the items whose work_ids are in ids, in
// submission order.
func (t *workTable) collect(ids ...map[string]struct{}) []WorkItem {
	n := 0
	for _, set := range ids {
		n += len(set)
	}
	if n == 0 {
		return nil
	}
	out := make([]WorkItem, 0, n)
	for _, set := range ids {
		for id := range set {
			out = append(out, t.items[id].Clone())
		}
	}
	SortWork(out)
	return out
}

// WorkKey is a work item's place in submission order: CreateIndex, then
// WorkID. Its text form, "CREATE_INDEX:WORK_ID", is the paging token of
// the work status API.
type WorkKey struct {
	CreateIndex uint64
	WorkID      string
}

// KeyOf returns w's place in submission order.
func KeyOf(w *WorkItem) WorkKey { return WorkKey{CreateIndex: w.CreateIndex, WorkID: w.WorkID} }

// IsZero reports whether k is the zero key, which comes before every item.
func (k WorkKey) IsZero() bool { return k == WorkKey{} }

// Compare orders keys as SortWork orders items.
func (k WorkKey) Compare(o WorkKey) int {
	if c := cmp.Compare(k.CreateIndex, o.CreateIndex); c != 0 {
		return c
	}
	return strings.Compare(k.WorkID, o.WorkID)
}

func (k WorkKey) String() string { return strconv.FormatUint(k.CreateIndex, 10) + ":" + k.WorkID }

// ParseWorkKey reads a key written by WorkKey.String.
func ParseWorkKey(s string) (WorkKey, error) {
	idx, id, ok := strings.Cut(s, ":")
	n, err := strconv.ParseUint(idx, 10, 64)
	if !ok || err != nil || n == 0 || id == "" {
		return WorkKey{}, fmt.Errorf("malformed token %q: want CREATE_INDEX:WORK_ID as returned in next_token", s)
	}
	return WorkKey{CreateIndex: n, WorkID: id}, nil
}

// page returns copies of at most limit items (limit <= 0: no limit) whose
// work_ids are in ids, in submission order after the key after, how many
// items ids hold in all, and whether more come after the page. Only the
// page's items are copied, and only the page's keys are sorted: a bounded
// max-heap keeps the limit smallest keys seen, so a page costs O(items ×
// log limit) at worst and about O(items) in practice, without a sort or a
// copy of every key.
func (t *workTable) page(after WorkKey, limit int, ids ...map[string]struct{}) (out []WorkItem, total int, more bool) {
	var keys keyHeap
	matching := 0
	for _, set := range ids {
		total += len(set)
		for id := range set {
			k := WorkKey{CreateIndex: t.items[id].CreateIndex, WorkID: id}
			if k.Compare(after) <= 0 {
				continue
			}
			matching++
			switch {
			case limit <= 0 || len(keys) < limit:
				heap.Push(&keys, k)
			case k.Compare(keys[0]) < 0:
				keys[0] = k
				heap.Fix(&keys, 0)
			}
		}
	}
	slices.SortFunc(keys, WorkKey.Compare)
	out = make([]WorkItem, len(keys))
	for i, k := range keys {
		out[i] = t.items[k.WorkID].Clone()
	}
	return out, total, matching > len(keys)
}

// keyHeap is a max-heap of work keys (the largest at [0]).
type keyHeap []WorkKey

func (h keyHeap) Len() int           { return len(h) }
func (h keyHeap) Less(i, j int) bool { return h[i].Compare(h[j]) > 0 }
func (h keyHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *keyHeap) Push(x any)        { *h = append(*h, x.(WorkKey)) }
func (h *keyHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	*h = old[:len(old)-1]
	return k
}
