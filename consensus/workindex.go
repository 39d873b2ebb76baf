package consensus

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
