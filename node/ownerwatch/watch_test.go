package ownerwatch

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/probe/owner"
)

// fakeSource answers with the idle time the test sets, or ErrNoData.
type fakeSource struct {
	mu   sync.Mutex
	idle time.Duration
	none bool
}

func (f *fakeSource) Name() string { return "fake" }
func (f *fakeSource) Read(context.Context) (owner.Reading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.none {
		return owner.Reading{}, fmt.Errorf("fake: %w", owner.ErrNoData)
	}
	return owner.Reading{Source: "fake", Idle: f.idle}, nil
}
func (f *fakeSource) set(idle time.Duration, none bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.idle, f.none = idle, none
}

// fakeWork records what the policy told the runner.
type fakeWork struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeWork) OwnerActive(action string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "active:"+action)
	return 1, nil
}
func (f *fakeWork) OwnerIdle() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "idle")
	return 1
}
func (f *fakeWork) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

type rig struct {
	src       *fakeSource
	work      *fakeWork
	w         *Watcher
	now       time.Time
	announced []string
}

func newRig(t *testing.T, action string, interval time.Duration) *rig {
	t.Helper()
	r := &rig{src: &fakeSource{idle: time.Hour}, work: &fakeWork{}, now: time.Unix(1_700_000_000, 0)}
	ov := &owner.Override{Now: func() time.Time { return r.now }}
	var mu sync.Mutex
	w, err := New(Config{Source: owner.NewChain(ov, r.src), Override: ov, Idle: 10 * time.Minute, Action: action,
		Interval: interval, Workload: r.work, Now: func() time.Time { return r.now }, Logger: testlog.New(t, 0),
		Announce: func(st owner.State, since time.Time) {
			mu.Lock()
			defer mu.Unlock()
			r.announced = append(r.announced, fmt.Sprintf("%s@%d", stateName(st), since.Unix()-1_700_000_000))
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	r.w = w
	return r
}

func TestWatcher_PolicyStateMachine(t *testing.T) {
	for _, action := range []string{"suspend", "requeue", "finish"} {
		t.Run(action, func(t *testing.T) {
			r := newRig(t, action, time.Hour)
			ctx := context.Background()
			step := func(idle time.Duration, none bool, want owner.State) {
				t.Helper()
				r.now = r.now.Add(time.Second)
				r.src.set(idle, none)
				if got := r.w.Poll(ctx); got != want {
					t.Fatalf("idle %s (no data %v): state %q, want %q", idle, none, got, want)
				}
			}
			step(time.Hour, false, owner.StateIdle)       // 1: idle for long: idle
			step(time.Hour, false, owner.StateIdle)       // 2: no change
			step(2*time.Second, false, owner.StateActive) // 3: a key: active, action applied
			step(5*time.Minute, false, owner.StateActive) // 4: not idle long enough yet
			step(10*time.Minute, false, owner.StateIdle)  // 5: idle for the threshold: resume
			step(0, true, "")                             // 6: no source: unknown (work as idle)
			step(0, false, owner.StateActive)             // 7
			step(0, true, "")                             // 8: unknown after active: resume
			want := []string{"active:" + action, "idle", "active:" + action, "idle"}
			if got := r.work.got(); !slices.Equal(got, want) {
				t.Fatalf("runner told %v, want %v", got, want)
			}
			wantAnn := []string{"idle@1", "active@3", "idle@5", "unknown@6", "active@7", "unknown@8"}
			if !slices.Equal(r.announced, wantAnn) {
				t.Fatalf("announced %v, want %v", r.announced, wantAnn)
			}
			if st, since := r.w.State(); st != "" || since.Unix()-1_700_000_000 != 8 {
				t.Fatalf("State() = %q since %v", st, since)
			}
		})
	}
}

func TestWatcher_DeclaredStateWinsUntilAuto(t *testing.T) {
	r := newRig(t, "suspend", time.Hour)
	ctx := context.Background()
	r.w.Poll(ctx)
	if got, err := r.w.Set(ctx, owner.StateActive); err != nil || got != owner.StateActive {
		t.Fatalf("Set(active) = %q, %v", got, err)
	}
	// The measured source says idle for an hour: the declaration holds.
	if got := r.w.Poll(ctx); got != owner.StateActive {
		t.Fatalf("Poll after Set(active) = %q", got)
	}
	if got, _ := r.w.Set(ctx, owner.StateIdle); got != owner.StateIdle {
		t.Fatalf("Set(idle) = %q", got)
	}
	r.src.set(0, false) // someone types: measured active, but idle was declared
	if got := r.w.Poll(ctx); got != owner.StateIdle {
		t.Fatalf("Poll after Set(idle) = %q", got)
	}
	if got := r.w.Auto(ctx); got != owner.StateActive {
		t.Fatalf("Auto() = %q, want the measured active", got)
	}
	if _, err := r.w.Set(ctx, "away"); err == nil {
		t.Fatal("Set(away) accepted")
	}
	if got := r.work.got(); !slices.Equal(got, []string{"active:suspend", "idle", "active:suspend"}) {
		t.Fatalf("runner told %v", got)
	}
}

func TestWatcher_LoopPollsAndCloseStopsIt(t *testing.T) {
	r := newRig(t, "suspend", 10*time.Millisecond)
	r.w.Start()
	r.src.set(0, false)
	testwait.Until(t, 5*time.Second, "the loop sees the owner", func() (bool, string) {
		st, _ := r.w.State()
		return st == owner.StateActive, string(st)
	})
	if err := r.w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.w.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	r.src.set(time.Hour, false)
	testwait.Holds(t, 100*time.Millisecond, "no poll after Close", func() (bool, string) {
		st, _ := r.w.State()
		return st == owner.StateActive, string(st)
	})
	if _, err := New(Config{Source: r.src, Override: &owner.Override{}}); err == nil {
		t.Fatal("New accepted -owner-idle 0")
	}
}
