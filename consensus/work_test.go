package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func testWork(id string) WorkItem {
	return WorkItem{WorkID: id, Requirements: Requirements{MinGPUVRAMGB: 8, MinCPUCores: 2, GPUType: "nvidia"},
		Payload: json.RawMessage(`{"x":1}`), MaxAttempts: 3, Deadline: t0.Add(10 * time.Minute)}
}

func TestWork_Transitions(t *testing.T) {
	t1 := t0.Add(time.Minute)
	assign := func(id string, attempt int, agent string) WorkTransition {
		return WorkTransition{WorkID: id, To: WorkAssigned, Attempt: attempt, AgentID: agent, GPUIndex: 1}
	}
	tests := []struct {
		name  string
		steps []WorkTransition // applied one entry each, after submitting "w"
		check func(t *testing.T, w WorkItem)
	}{
		{
			name:  "assign from pending",
			steps: []WorkTransition{assign("w", 1, "a")},
			check: func(t *testing.T, w WorkItem) {
				if w.Status != WorkAssigned || w.Attempts != 1 || w.AgentID != "a" || w.GPUIndex != 1 || !w.AssignedAt.Equal(t1) {
					t.Errorf("got %+v", w)
				}
			},
		},
		{
			name:  "assign with a wrong attempt is ignored",
			steps: []WorkTransition{assign("w", 2, "a")},
			check: func(t *testing.T, w WorkItem) {
				if w.Status != WorkPending || w.Attempts != 0 {
					t.Errorf("got %s attempt %d, want pending 0", w.Status, w.Attempts)
				}
			},
		},
		{
			name:  "repeated assign is idempotent",
			steps: []WorkTransition{assign("w", 1, "a"), assign("w", 1, "b")},
			check: func(t *testing.T, w WorkItem) {
				if w.AgentID != "a" || w.Attempts != 1 {
					t.Errorf("got agent %s attempt %d, want a 1", w.AgentID, w.Attempts)
				}
			},
		},
		{
			name: "run and succeed",
			steps: []WorkTransition{assign("w", 1, "a"), {WorkID: "w", To: WorkRunning, Attempt: 1, StartedAt: t0},
				{WorkID: "w", To: WorkSucceeded, Attempt: 1, Output: "ok", FinishedAt: t1}},
			check: func(t *testing.T, w WorkItem) {
				if w.Status != WorkSucceeded || w.Output != "ok" || !w.StartedAt.Equal(t0) || !w.FinishedAt.Equal(t1) {
					t.Errorf("got %+v", w)
				}
			},
		},
		{
			name: "a result of an old attempt is ignored",
			steps: []WorkTransition{assign("w", 1, "a"), {WorkID: "w", To: WorkPending, Attempt: 1, Error: "node lost"},
				assign("w", 2, "b"), {WorkID: "w", To: WorkFailed, Attempt: 1, ExitCode: 3}},
			check: func(t *testing.T, w WorkItem) {
				if w.Status != WorkAssigned || w.Attempts != 2 || w.AgentID != "b" {
					t.Errorf("got %s attempt %d on %s, want assigned 2 on b", w.Status, w.Attempts, w.AgentID)
				}
			},
		},
		{
			name: "a node's result after its attempt was requeued (fenced) is ignored",
			steps: []WorkTransition{assign("w", 1, "a"), {WorkID: "w", To: WorkRunning, Attempt: 1},
				{WorkID: "w", To: WorkPending, Attempt: 1, Error: "node lost"},
				{WorkID: "w", To: WorkSucceeded, Attempt: 1, AgentID: "a", Output: "zombie"}},
			check: func(t *testing.T, w WorkItem) {
				if w.Status != WorkPending || w.Attempts != 1 || w.Output != "" {
					t.Errorf("got %s attempt %d output %q, want pending 1 without output", w.Status, w.Attempts, w.Output)
				}
			},
		},
		{
			name: "a result from another node than the attempt's is ignored",
			steps: []WorkTransition{assign("w", 1, "a"),
				{WorkID: "w", To: WorkSucceeded, Attempt: 1, AgentID: "b", Output: "stray"}},
			check: func(t *testing.T, w WorkItem) {
				if w.Status != WorkAssigned || w.Output != "" {
					t.Errorf("got %s output %q, want assigned without output", w.Status, w.Output)
				}
			},
		},
		{
			name: "the lease is recorded with the assignment",
			steps: []WorkTransition{{WorkID: "w", To: WorkAssigned, Attempt: 1, AgentID: "a", LeaseExpiresAt: t1.Add(10 * time.Second)},
				{WorkID: "w", To: WorkSucceeded, Attempt: 1, AgentID: "a", Output: "ok"}},
			check: func(t *testing.T, w WorkItem) {
				if !w.LeaseExpiresAt.Equal(t1.Add(10*time.Second)) || w.Status != WorkSucceeded || w.Output != "ok" {
					t.Errorf("got %+v", w)
				}
			},
		},
		{
			name: "terminal is final",
			steps: []WorkTransition{{WorkID: "w", To: WorkFailed, Error: "no capacity", DeadLetter: true},
				assign("w", 1, "a"), {WorkID: "w", To: WorkSucceeded}},
			check: func(t *testing.T, w WorkItem) {
				if w.Status != WorkFailed || w.Error != "no capacity" || !w.DeadLetter {
					t.Errorf("got %+v", w)
				}
			},
		},
		{
			name: "no assignment beyond max attempts",
			steps: []WorkTransition{assign("w", 1, "a"), {WorkID: "w", To: WorkPending, Attempt: 1},
				assign("w", 2, "a"), {WorkID: "w", To: WorkPending, Attempt: 2},
				assign("w", 3, "a"), {WorkID: "w", To: WorkPending, Attempt: 3, Deadline: t1},
				assign("w", 4, "a")},
			check: func(t *testing.T, w WorkItem) {
				if w.Status != WorkPending || w.Attempts != 3 || !w.Deadline.Equal(t1) {
					t.Errorf("got %s attempt %d deadline %v, want pending 3 %v", w.Status, w.Attempts, w.Deadline, t1)
				}
			},
		},
		{
			name: "an attempt handed back for the owner does not count",
			steps: []WorkTransition{assign("w", 1, "a"), {WorkID: "w", To: WorkPending, Attempt: 1},
				assign("w", 2, "a"), {WorkID: "w", To: WorkRunning, Attempt: 2},
				{WorkID: "w", To: WorkPending, Attempt: 2, Yielded: true, Error: "owner active"},
				{WorkID: "w", To: WorkPending, Attempt: 2, Yielded: true}, // repeated: ignored, counted once
				assign("w", 3, "a"), {WorkID: "w", To: WorkPending, Attempt: 3},
				assign("w", 4, "b")},
			check: func(t *testing.T, w WorkItem) {
				if w.Status != WorkAssigned || w.Attempts != 4 || w.MaxAttempts != 4 || w.AgentID != "b" {
					t.Errorf("got %s attempt %d of %d on %s, want assigned 4 of 4 on b (3 counted + 1 handed back)",
						w.Status, w.Attempts, w.MaxAttempts, w.AgentID)
				}
			},
		},
		{
			name:  "unknown work is ignored",
			steps: []WorkTransition{assign("other", 1, "a")},
			check: func(t *testing.T, w WorkItem) {
				if w.Status != WorkPending {
					t.Errorf("status %s", w.Status)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFSM()
			applyAt(t, f, 1, SubmitWork{At: t0, Items: []WorkItem{testWork("w")}})
			for i, s := range tt.steps {
				applyAt(t, f, uint64(i+2), UpdateWork{At: t1, Transitions: []WorkTransition{s}})
			}
			if f.Index() != uint64(len(tt.steps)+1) {
				t.Fatalf("Index() = %d", f.Index())
			}
			w, ok := f.GetWork("w")
			if !ok {
				t.Fatal("work w missing")
			}
			if w.CreateIndex != 1 {
				t.Errorf("CreateIndex = %d, want 1", w.CreateIndex)
			}
			tt.check(t, w)
		})
	}
}

func TestWork_SubmitIsIdempotent(t *testing.T) {
	f := NewFSM()
	applyAt(t, f, 1, SubmitWork{At: t0, Items: []WorkItem{testWork("w")}})
	applyAt(t, f, 2, UpdateWork{At: t0, Transitions: []WorkTransition{{WorkID: "w", To: WorkAssigned, Attempt: 1, AgentID: "a"}}})
	again := testWork("w")
	again.Payload = json.RawMessage(`"different"`)
	applyAt(t, f, 3, SubmitWork{At: t0, Items: []WorkItem{again, testWork("v")}})
	w, _ := f.GetWork("w")
	if w.Status != WorkAssigned || string(w.Payload) != `{"x":1}` || w.ModifyIndex != 2 {
		t.Fatalf("resubmission changed the item: %+v", w)
	}
	v, ok := f.GetWork("v")
	if !ok || v.Status != WorkPending || v.GPUIndex != NoGPU || !v.SubmittedAt.Equal(t0) || v.CreateIndex != 3 {
		t.Fatalf("new item in the same batch: %+v", v)
	}
	ids := []string{}
	for _, w := range f.ListWork(nil) {
		ids = append(ids, w.WorkID)
	}
	if want := []string{"w", "v"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("ListWork order %v, want %v (submission order)", ids, want)
	}
	if c := f.WorkCounts(); c[WorkAssigned] != 1 || c[WorkPending] != 1 || c[WorkFailed] != 0 {
		t.Fatalf("counts %v", c)
	}
}

func TestWork_PublishedAndDelete(t *testing.T) {
	f := NewFSM()
	applyAt(t, f, 1, SubmitWork{At: t0, Items: []WorkItem{testWork("done"), testWork("open")}})
	applyAt(t, f, 2, UpdateWork{At: t0, Transitions: []WorkTransition{{WorkID: "done", To: WorkFailed, Error: "no capacity"}}})
	applyAt(t, f, 3, MarkWorkPublished{At: t0.Add(time.Second), WorkIDs: []string{"done", "open", "nope"}})
	if w, _ := f.GetWork("done"); !w.Published || !w.PublishedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("done not published: %+v", w)
	}
	if w, _ := f.GetWork("open"); w.Published {
		t.Fatal("an unfinished item was marked published")
	}
	applyAt(t, f, 4, DeleteWork{At: t0, WorkIDs: []string{"done", "nope"}})
	if _, ok := f.GetWork("done"); ok {
		t.Fatal("done survived DeleteWork")
	}
	if got := f.ListWork(func(w *WorkItem) bool { return w.Status == WorkPending }); len(got) != 1 || got[0].WorkID != "open" {
		t.Fatalf("ListWork(pending) = %+v", got)
	}
}

func TestWork_SnapshotRestore(t *testing.T) {
	src := NewFSM()
	applyAt(t, src, 1, UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline)}})
	applyAt(t, src, 2, SubmitWork{At: t0, Items: []WorkItem{testWork("w1"), testWork("w2")}})
	applyAt(t, src, 3, UpdateWork{At: t0, Transitions: []WorkTransition{{WorkID: "w1", To: WorkAssigned, Attempt: 1, AgentID: "a"}}})
	b := snapshotBytes(t, src)
	dst := NewFSM()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(src.ListWork(nil), dst.ListWork(nil)) || dst.Index() != 3 {
		t.Fatalf("restored work differs:\n%+v\n%+v", src.ListWork(nil), dst.ListWork(nil))
	}
	if !bytes.Equal(b, snapshotBytes(t, dst)) {
		t.Fatal("snapshot of the restored registry differs")
	}
	// A snapshot written before work existed restores with no work.
	old := []byte(`{"version":1,"index":7,"nodes":[{"agent_id":"a"}]}`)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	if len(dst.ListWork(nil)) != 0 || dst.Len() != 1 {
		t.Fatal("old snapshot left work behind")
	}
	bad := []byte(`{"version":1,"index":7,"nodes":[],"work":[{"work_id":""}]}`)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(bad))); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("Restore(work without id) = %v, want ErrBadSnapshot", err)
	}
}

func TestWork_CommandValidation(t *testing.T) {
	neg := testWork("w")
	neg.Requirements.MinCPUCores = -1
	noAttempts := testWork("w")
	noAttempts.MaxAttempts = 0
	for name, c := range map[string]Command{
		"submit without time":      SubmitWork{Items: []WorkItem{testWork("w")}},
		"submit empty":             SubmitWork{At: t0},
		"submit without id":        SubmitWork{At: t0, Items: []WorkItem{{MaxAttempts: 1}}},
		"submit negative":          SubmitWork{At: t0, Items: []WorkItem{neg}},
		"submit zero max attempts": SubmitWork{At: t0, Items: []WorkItem{noAttempts}},
		"update unknown status":    UpdateWork{At: t0, Transitions: []WorkTransition{{WorkID: "w", To: "done"}}},
		"assign to nobody":         UpdateWork{At: t0, Transitions: []WorkTransition{{WorkID: "w", To: WorkAssigned, Attempt: 1}}},
		"publish empty id":         MarkWorkPublished{At: t0, WorkIDs: []string{""}},
		"delete empty":             DeleteWork{At: t0},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: EncodeCommand err = %v, want ErrBadCommand", name, err)
		}
	}
}

func TestWork_PayloadCompacted(t *testing.T) {
	b := append([]byte{byte(CmdSubmitWork)}, `{"at":"2025-03-01T12:00:00Z","items":[{"work_id":"w","max_attempts":1,"payload":{ "a" : [1, 2] }}]}`...)
	c, err := DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(c.(SubmitWork).Items[0].Payload); got != `{"a":[1,2]}` {
		t.Fatalf("payload %s, want compact", got)
	}
}

// checkWorkIndexes compares the FSM's status and outbox indexes with a full
// scan of the registry.
func checkWorkIndexes(t *testing.T, f *FSM) {
	t.Helper()
	counts := f.WorkCounts()
	for _, s := range WorkStatuses {
		want := f.ListWork(func(w *WorkItem) bool { return w.Status == s })
		if got := f.WorkByStatus(s); !reflect.DeepEqual(got, want) {
			t.Fatalf("WorkByStatus(%s) = %d items, a scan finds %d", s, len(got), len(want))
		}
		if counts[s] != len(want) {
			t.Fatalf("WorkCounts()[%s] = %d, a scan finds %d", s, counts[s], len(want))
		}
	}
	active := f.ListWork(func(w *WorkItem) bool { return w.Status.Active() })
	if got := f.WorkByStatus(WorkPending, WorkAssigned, WorkRunning, WorkPending); !reflect.DeepEqual(got, active) {
		t.Fatalf("WorkByStatus(active) = %d items, a scan finds %d", len(got), len(active))
	}
	outbox := f.ListWork(func(w *WorkItem) bool { return w.Status.Terminal() && !w.Published })
	if got := f.UnpublishedWork(); !reflect.DeepEqual(got, outbox) {
		t.Fatalf("UnpublishedWork() = %d items, a scan finds %d", len(got), len(outbox))
	}
	refs := map[string]FinishedRef{}
	for _, r := range f.FinishedWork() {
		refs[r.WorkID] = r
	}
	terminal := f.ListWork(func(w *WorkItem) bool { return w.Status.Terminal() })
	if len(refs) != len(terminal) {
		t.Fatalf("FinishedWork() = %d items, a scan finds %d", len(refs), len(terminal))
	}
	for _, w := range terminal {
		if r := refs[w.WorkID]; !r.FinishedAt.Equal(w.FinishedAt) || r.Published != w.Published {
			t.Fatalf("FinishedWork() has %+v for %+v", r, w)
		}
	}
	// Paging: walking every page, of every size, gives the scan's items.
	all := f.ListWork(nil)
	for _, c := range []struct {
		statuses []WorkStatus
		want     []WorkItem
	}{{nil, all}, {[]WorkStatus{WorkPending, WorkAssigned, WorkRunning}, active}} {
		for limit := 0; limit <= len(c.want)+1; limit++ {
			var got []WorkItem
			after, pages := WorkKey{}, 0
			for {
				page, total, more := f.WorkPage(after, limit, c.statuses...)
				if total != len(c.want) || (limit > 0 && len(page) > limit) {
					t.Fatalf("WorkPage(%v, %d): %d items of total %d; a scan finds %d", after, limit, len(page), total, len(c.want))
				}
				got = append(got, page...)
				if pages++; !more {
					break
				}
				if len(page) == 0 || pages > len(c.want) {
					t.Fatalf("WorkPage(%v, %d) says more follow after an empty page or too many pages", after, limit)
				}
				after = KeyOf(&page[len(page)-1])
			}
			if len(got) != len(c.want) || (len(got) > 0 && !reflect.DeepEqual(got, c.want)) {
				t.Fatalf("pages of %d (%v) give %d items, a scan finds %d", limit, c.statuses, len(got), len(c.want))
			}
		}
	}
}

func TestWorkKey_RoundTrip(t *testing.T) {
	for _, k := range []WorkKey{{1, "a"}, {18446744073709551615, "job:7:with:colons"}} {
		got, err := ParseWorkKey(k.String())
		if err != nil || got != k {
			t.Fatalf("ParseWorkKey(%q) = %v, %v", k.String(), got, err)
		}
	}
	for _, bad := range []string{"", "7", "x:a", "0:a", "7:", "-1:a", ":a"} {
		if _, err := ParseWorkKey(bad); err == nil || !strings.Contains(err.Error(), "next_token") {
			t.Fatalf("ParseWorkKey(%q) err = %v, want a clear error", bad, err)
		}
	}
}

// FuzzWork_IndexesMatchScan applies a command sequence drawn from the fuzz
// input and checks after every entry, and after a snapshot round trip,
// that the indexes the leader reads agree with a scan of every item.
func FuzzWork_IndexesMatchScan(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{0, 0, 16, 33, 50, 67, 84, 101, 5, 22, 39, 56, 73, 90, 107})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 200 {
			ops = ops[:200]
		}
		fsm := NewFSM()
		ids := []string{"a", "b", "c", "d"}
		statuses := []WorkStatus{WorkPending, WorkAssigned, WorkRunning, WorkSucceeded, WorkFailed}
		for i, op := range ops {
			id := ids[int(op>>2)%len(ids)]
			at := t0.Add(time.Duration(i) * time.Second)
			var c Command
			switch op % 4 {
			case 0:
				c = SubmitWork{At: at, Items: []WorkItem{testWork(id)}}
			case 1:
				w, _ := fsm.GetWork(id)
				to := statuses[int(op>>4)%len(statuses)]
				attempt := w.Attempts
				if to == WorkAssigned {
					attempt++
				}
				c = UpdateWork{At: at, Transitions: []WorkTransition{{WorkID: id, To: to, Attempt: attempt, AgentID: "n"}}}
			case 2:
				c = MarkWorkPublished{At: at, WorkIDs: []string{id}}
			case 3:
				if op&0x40 == 0 {
					continue // deletes are rarer than the rest
				}
				c = DeleteWork{At: at, WorkIDs: []string{id}}
			}
			applyAt(t, fsm, uint64(i+1), c)
			checkWorkIndexes(t, fsm)
		}
		restored := NewFSM()
		if err := restored.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, fsm)))); err != nil {
			t.Fatal(err)
		}
		checkWorkIndexes(t, restored)
		if !reflect.DeepEqual(restored.ListWork(nil), fsm.ListWork(nil)) {
			t.Fatal("restored registry differs")
		}
	})
}

// BenchmarkWorkList_100k compares, at the retention cap's 100,000
// finished items (1 KiB payload and output each), what GET /work costs the
// registry: one page of 1,000 (WorkPage: keys ordered, only the page
// copied) against every item (ListWork: all copied, then sorted), as the
// endpoint answered before paging; and what the retention GC's listing
// costs: FinishedWork's references against copies of the items.
func BenchmarkWorkList_100k(b *testing.B) {
	f := NewFSM()
	payload := json.RawMessage(`"` + strings.Repeat("p", 1022) + `"`)
	const n, batch = 100_000, 1_000
	idx := uint64(0)
	for i := 0; i < n; i += batch {
		items := make([]WorkItem, batch)
		var tr []WorkTransition
		for j := range items {
			id := fmt.Sprintf("w-%06d", i+j)
			items[j] = WorkItem{WorkID: id, Payload: payload, MaxAttempts: 1}
			tr = append(tr, WorkTransition{WorkID: id, To: WorkSucceeded, Attempt: 0, Output: strings.Repeat("o", 1024)})
		}
		idx++
		applyAt(b, f, idx, SubmitWork{At: t0, Items: items})
		idx++
		applyAt(b, f, idx, UpdateWork{At: t0, Transitions: tr})
	}
	if c := f.WorkCounts()[WorkSucceeded]; c != n {
		b.Fatalf("%d succeeded items, want %d", c, n)
	}
	b.Run("page-1000", func(b *testing.B) {
		for b.Loop() {
			if page, total, more := f.WorkPage(WorkKey{}, 1000); len(page) != 1000 || total != n || !more {
				b.Fatal(len(page), total, more)
			}
		}
	})
	b.Run("all", func(b *testing.B) {
		for b.Loop() {
			if all := f.ListWork(nil); len(all) != n {
				b.Fatal(len(all))
			}
		}
	})
	// The retention GC's once-a-minute listing: references only, against
	// the copies of every finished item it took before.
	b.Run("gc-refs", func(b *testing.B) {
		for b.Loop() {
			if refs := f.FinishedWork(); len(refs) != n {
				b.Fatal(len(refs))
			}
		}
	})
	b.Run("gc-items", func(b *testing.B) {
		for b.Loop() {
			if items := f.WorkByStatus(WorkSucceeded, WorkFailed); len(items) != n {
				b.Fatal(len(items))
			}
		}
	})
}

// TestFSM_WorkReachability: only SetWorkReachability changes a record's
// UnreachableSince; the liveness reconciler's upserts keep it.
func TestFSM_WorkReachability(t *testing.T) {
	t1 := t0.Add(time.Minute)
	f := NewFSM()
	applyAt(t, f, 1, UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline)}})
	applyAt(t, f, 2, SetWorkReachability{At: t1, AgentID: "a", Unreachable: true, Since: t0})
	applyAt(t, f, 3, SetWorkReachability{At: t1, AgentID: "unknown", Unreachable: true, Since: t0})
	applyAt(t, f, 4, UpsertNodes{At: t1, Nodes: []Record{testRecord("a", StatusOnline)}})
	r, _ := f.Get("a")
	if r.Reachable() || !r.UnreachableSince.Equal(t0) || r.Status != StatusOnline {
		t.Fatalf("after an upsert: %s, unreachable since %v; want online, unreachable since %v", r.Status, r.UnreachableSince, t0)
	}
	if _, ok := f.Get("unknown"); ok {
		t.Fatal("SetWorkReachability created a record")
	}
	applyAt(t, f, 5, SetWorkReachability{At: t1, AgentID: "a"})
	if r, _ := f.Get("a"); !r.Reachable() || r.ModifyIndex != 5 {
		t.Fatalf("after clearing: unreachable since %v, modify index %d", r.UnreachableSince, r.ModifyIndex)
	}
	for name, c := range map[string]SetWorkReachability{
		"no time":  {AgentID: "a"},
		"no agent": {At: t1},
		"no since": {At: t1, AgentID: "a", Unreachable: true},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: %v, want ErrBadCommand", name, err)
		}
	}
}
