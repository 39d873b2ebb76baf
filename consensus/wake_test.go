package consensus

import (
	"errors"
	"testing"
	"time"
)

// TestFSM_WakeNode: a wake is kept on the node (an upsert of the
// reconciler does not erase it) and in the history of the pending items it
// was for, not of items that are no longer pending.
func TestFSM_WakeNode(t *testing.T) {
	t1 := t0.Add(time.Minute)
	f := NewFSM()
	applyAt(t, f, 1, UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusAsleep)}})
	applyAt(t, f, 2, SubmitWork{At: t0, Items: []WorkItem{testWork("w1"), testWork("w2")}})
	applyAt(t, f, 3, UpdateWork{At: t0, Transitions: []WorkTransition{{WorkID: "w2", To: WorkFailed, Attempt: 0}}})
	applyAt(t, f, 4, WakeNode{At: t1, AgentID: "a", MAC: "0a:1b:2c:3d:4e:5f", WorkIDs: []string{"w1", "w2", "gone"}})
	applyAt(t, f, 5, UpsertNodes{At: t1, Nodes: []Record{testRecord("a", StatusOnline)}})
	applyAt(t, f, 6, WakeNode{At: t1, AgentID: "unknown", WorkIDs: []string{"w1"}})
	if r, _ := f.Get("a"); !r.WakeSentAt.Equal(t1) || r.Status != StatusOnline {
		t.Fatalf("node after wake and upsert: %s, wake sent at %v; want online, %v", r.Status, r.WakeSentAt, t1)
	}
	if _, ok := f.Get("unknown"); ok {
		t.Fatal("WakeNode created a record")
	}
	w1, _ := f.GetWork("w1")
	if len(w1.Events) != 1 || w1.Events[0].Event != WorkEventWake || w1.Events[0].AgentID != "a" || !w1.Events[0].At.Equal(t1) || w1.ModifyIndex != 4 {
		t.Fatalf("w1 events = %+v (modify index %d), want one wake of a at %v", w1.Events, w1.ModifyIndex, t1)
	}
	if w2, _ := f.GetWork("w2"); len(w2.Events) != 0 {
		t.Fatalf("finished w2 got events %+v", w2.Events)
	}
	for name, c := range map[string]WakeNode{
		"no time":    {AgentID: "a"},
		"no agent":   {At: t1},
		"empty work": {At: t1, AgentID: "a", WorkIDs: []string{""}},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: %v, want ErrBadCommand", name, err)
		}
	}
}
