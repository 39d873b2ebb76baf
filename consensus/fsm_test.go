package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// applyAt encodes c and applies it to f as log entry index.
func applyAt(t testing.TB, f *FSM, index uint64, c Command) {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	if resp := f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: b}); resp != nil {
		t.Fatalf("apply %d: %v", index, resp)
	}
}

func TestFSM_Upsert(t *testing.T) {
	t1 := t0.Add(time.Minute)
	tests := []struct {
		name  string
		setup []Command // applied at indexes 1, 2, ...
		apply Command   // applied next
		id    string
		check func(t *testing.T, r Record, index uint64)
	}{
		{
			name:  "new record takes At as first seen and status change",
			apply: UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline)}},
			id:    "a",
			check: func(t *testing.T, r Record, index uint64) {
				if !r.FirstSeenAt.Equal(t0) || !r.StatusChangedAt.Equal(t0) {
					t.Errorf("first seen %v, status changed %v; want %v", r.FirstSeenAt, r.StatusChangedAt, t0)
				}
				if r.ModifyIndex != index {
					t.Errorf("ModifyIndex = %d, want %d", r.ModifyIndex, index)
				}
			},
		},
		{
			name:  "existing record keeps first seen",
			setup: []Command{UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline)}}},
			apply: UpsertNodes{At: t1, Nodes: []Record{func() Record {
				r := testRecord("a", StatusOnline)
				r.FirstSeenAt = t1 // the leader's idea is ignored
				r.Name = "renamed"
				return r
			}()}},
			id: "a",
			check: func(t *testing.T, r Record, index uint64) {
				if !r.FirstSeenAt.Equal(t0) {
					t.Errorf("FirstSeenAt = %v, want %v", r.FirstSeenAt, t0)
				}
				if r.Name != "renamed" || r.ModifyIndex != index {
					t.Errorf("got name %q index %d, want renamed at %d", r.Name, r.ModifyIndex, index)
				}
				if !r.StatusChangedAt.Equal(t0) {
					t.Errorf("unchanged status: StatusChangedAt = %v, want %v", r.StatusChangedAt, t0)
				}
			},
		},
		{
			name:  "status change without time takes At",
			setup: []Command{UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline)}}},
			apply: UpsertNodes{At: t1, Nodes: []Record{testRecord("a", StatusSuspect)}},
			id:    "a",
			check: func(t *testing.T, r Record, _ uint64) {
				if r.Status != StatusSuspect || !r.StatusChangedAt.Equal(t1) {
					t.Errorf("status %s changed %v, want suspect at %v", r.Status, r.StatusChangedAt, t1)
				}
			},
		},
		{
			name:  "new record keeps a first seen the leader set",
			apply: UpsertNodes{At: t1, Nodes: []Record{func() Record { r := testRecord("a", StatusOnline); r.FirstSeenAt = t0; return r }()}},
			id:    "a",
			check: func(t *testing.T, r Record, _ uint64) {
				if !r.FirstSeenAt.Equal(t0) {
					t.Errorf("FirstSeenAt = %v, want %v", r.FirstSeenAt, t0)
				}
			},
		},
		{
			name:  "later duplicate in a batch wins",
			apply: UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline), testRecord("a", StatusLeft)}},
			id:    "a",
			check: func(t *testing.T, r Record, _ uint64) {
				if r.Status != StatusLeft {
					t.Errorf("status %s, want left", r.Status)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFSM()
			for i, c := range tt.setup {
				applyAt(t, f, uint64(i+1), c)
			}
			index := uint64(len(tt.setup) + 10) // indexes may skip (raft's own entries)
			applyAt(t, f, index, tt.apply)
			if f.Index() != index {
				t.Fatalf("Index() = %d, want %d", f.Index(), index)
			}
			r, ok := f.Get(tt.id)
			if !ok {
				t.Fatalf("Get(%q) found nothing", tt.id)
			}
			tt.check(t, r, index)
		})
	}
}

func TestFSM_Delete(t *testing.T) {
	f := NewFSM()
	applyAt(t, f, 1, UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline), testRecord("b", StatusOffline), testRecord("c", StatusOnline)}})
	applyAt(t, f, 2, DeleteNodes{At: t0, AgentIDs: []string{"b", "unknown"}})
	if _, ok := f.Get("b"); ok {
		t.Fatal("b still present after delete")
	}
	var ids []string
	for _, r := range f.List() {
		ids = append(ids, r.AgentID)
	}
	if want := []string{"a", "c"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("List() ids = %v, want %v", ids, want)
	}
	if f.Index() != 2 {
		t.Fatalf("Index() = %d, want 2", f.Index())
	}
}

func TestFSM_ListSortedAndCopied(t *testing.T) {
	f := NewFSM()
	applyAt(t, f, 1, UpsertNodes{At: t0, Nodes: []Record{testRecord("c", StatusOnline), testRecord("a", StatusOnline), testRecord("b", StatusOnline)}})
	list := f.List()
	for i, want := range []string{"a", "b", "c"} {
		if list[i].AgentID != want {
			t.Fatalf("List()[%d] = %s, want %s", i, list[i].AgentID, want)
		}
	}
	// Mutating what we got must not reach the registry.
	list[0].Roles[0] = "mutated"
	list[0].Metrics.GPUs[0].Name = "mutated"
	got, _ := f.Get("a")
	got.Roles[0] = "mutated too"
	again, _ := f.Get("a")
	if again.Roles[0] != "desktop" || again.Metrics.GPUs[0].Name != "RTX 4090" {
		t.Fatalf("registry changed through a returned copy: %+v", again)
	}
}

func TestFSM_Counts(t *testing.T) {
	f := NewFSM()
	want := map[Status]int{StatusOnline: 0, StatusSuspect: 0, StatusOffline: 0, StatusLeft: 0, StatusAsleep: 0}
	if got := f.Counts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("empty Counts() = %v, want %v", got, want)
	}
	applyAt(t, f, 1, UpsertNodes{At: t0, Nodes: []Record{
		testRecord("a", StatusOnline), testRecord("b", StatusOnline), testRecord("c", StatusSuspect), testRecord("d", StatusLeft),
	}})
	want = map[Status]int{StatusOnline: 2, StatusSuspect: 1, StatusOffline: 0, StatusLeft: 1, StatusAsleep: 0}
	if got := f.Counts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Counts() = %v, want %v", got, want)
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

func TestFSM_SnapshotRestore(t *testing.T) {
	src := NewFSM()
	applyAt(t, src, 3, UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline), testRecord("b", StatusSuspect)}})
	applyAt(t, src, 7, UpsertNodes{At: t0.Add(time.Second), Nodes: []Record{testRecord("c", StatusOffline)}})

	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after Snapshot must not leak into it.
	applyAt(t, src, 8, DeleteNodes{At: t0, AgentIDs: []string{"a"}})
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	dst := NewFSM()
	applyAt(t, dst, 1, UpsertNodes{At: t0, Nodes: []Record{testRecord("stale", StatusOnline)}}) // replaced by Restore
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if dst.Index() != 7 {
		t.Fatalf("restored Index() = %d, want 7", dst.Index())
	}
	if len(dst.List()) != 3 {
		t.Fatalf("restored %d records, want 3", len(dst.List()))
	}
	if _, ok := dst.Get("stale"); ok {
		t.Fatal("Restore kept a record that was not in the snapshot")
	}
	// Restore a snapshot of the current source and compare everything,
	// times and ModifyIndex included.
	if err := dst.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, src)))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dst.List(), src.List()) || dst.Index() != src.Index() {
		t.Fatalf("restored registry differs:\n got %+v\nwant %+v", dst.List(), src.List())
	}
	if !bytes.Equal(snapshotBytes(t, dst), snapshotBytes(t, src)) {
		t.Fatal("snapshots of equal registries differ")
	}
}

func TestFSM_RestoreBad(t *testing.T) {
	tests := []struct{ name, data string }{
		{"empty", ""},
		{"garbage", "not json"},
		{"wrong version", `{"version":99,"index":1,"nodes":[]}`},
		{"record without id", `{"version":1,"index":1,"nodes":[{"name":"x"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFSM()
			applyAt(t, f, 1, UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline)}})
			err := f.Restore(io.NopCloser(strings.NewReader(tt.data)))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("Restore err = %v, want ErrBadSnapshot", err)
			}
			if _, ok := f.Get("a"); !ok || f.Index() != 1 {
				t.Fatal("failed Restore changed the registry")
			}
		})
	}
}

func TestFSM_WaitIndex(t *testing.T) {
	f := NewFSM()
	applyAt(t, f, 1, UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline)}})

	t.Run("already past", func(t *testing.T) {
		got, err := f.WaitIndex(context.Background(), 0)
		if err != nil || got != 1 {
			t.Fatalf("WaitIndex(0) = %d, %v; want 1, nil", got, err)
		}
	})

	t.Run("wakes on apply", func(t *testing.T) {
		done := make(chan uint64)
		go func() {
			got, err := f.WaitIndex(context.Background(), 1)
			if err != nil {
				t.Error(err)
			}
			done <- got
		}()
		select {
		case got := <-done:
			t.Fatalf("WaitIndex(1) returned %d before any apply", got)
		case <-time.After(20 * time.Millisecond): // give it a chance to return wrongly
		}
		applyAt(t, f, 2, DeleteNodes{At: t0, AgentIDs: []string{"zzz"}})
		select {
		case got := <-done:
			if got != 2 {
				t.Fatalf("WaitIndex(1) = %d, want 2", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("WaitIndex did not wake on apply")
		}
	})

	t.Run("honours ctx", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		got, err := f.WaitIndex(ctx, 100)
		if !errors.Is(err, context.DeadlineExceeded) || got != f.Index() {
			t.Fatalf("WaitIndex = %d, %v; want %d, DeadlineExceeded", got, err, f.Index())
		}
	})

	t.Run("wakes on restore", func(t *testing.T) {
		src := NewFSM()
		applyAt(t, src, 50, UpsertNodes{At: t0, Nodes: []Record{testRecord("z", StatusOnline)}})
		data := snapshotBytes(t, src)
		done := make(chan uint64)
		after := f.Index()
		go func() {
			got, _ := f.WaitIndex(context.Background(), after)
			done <- got
		}()
		if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-done:
			if got != 50 {
				t.Fatalf("WaitIndex = %d, want 50", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("WaitIndex did not wake on restore")
		}
	})
}

func TestFSM_ApplyGarbagePanics(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"unknown type", []byte{200, '{', '}'}},
		{"bad json", []byte{byte(CmdUpsertNodes), '{'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFSM()
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("Apply of an undecodable entry did not panic")
				}
				if msg := fmt.Sprint(r); !strings.Contains(msg, "index=42") {
					t.Fatalf("panic %q does not name the index", msg)
				}
				t.Logf("panicked as required: %v", r)
			}()
			f.Apply(&raft.Log{Index: 42, Term: 3, Type: raft.LogCommand, Data: tt.data})
		})
	}
}

// TestFSM_ConcurrentReads runs readers against applies under -race.
func TestFSM_ConcurrentReads(t *testing.T) {
	f := NewFSM()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, r := range f.List() {
				_ = r.Metrics.GPUs
			}
			_ = f.Counts()
			_, _ = f.Get("n-1")
		}
	}()
	for i := 1; i <= 200; i++ {
		applyAt(t, f, uint64(i), UpsertNodes{At: t0, Nodes: []Record{testRecord(fmt.Sprintf("n-%d", i%10), StatusOnline)}})
	}
	close(stop)
	<-done
	if f.Len() != 10 {
		t.Fatalf("Len() = %d, want 10", f.Len())
	}
}

// BenchmarkFSMApplyBatch applies a batch of 1,000 upserts to registries of
// different sizes: the cost per batch must not grow with the registry.
func BenchmarkFSMApplyBatch(b *testing.B) {
	const batch = 1000
	encode := func(first int) []byte {
		nodes := make([]Record, batch)
		for i := range nodes {
			nodes[i] = testRecord(fmt.Sprintf("%08d-0000-4000-8000-000000000000", first+i), StatusOnline)
		}
		data, err := EncodeCommand(UpsertNodes{At: t0, Nodes: nodes})
		if err != nil {
			b.Fatal(err)
		}
		return data
	}
	for _, size := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("registry=%d", size), func(b *testing.B) {
			f := NewFSM()
			index := uint64(0)
			for first := 0; first < size; first += batch {
				index++
				f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: encode(first)})
			}
			data := encode(size / 2) // replaces records in the middle
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				index++
				f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/record")
		})
	}
}
