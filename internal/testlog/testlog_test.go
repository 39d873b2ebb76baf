package testlog

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// fakeTB records what a logger sends to the test and runs its cleanups on
// demand.
type fakeTB struct {
	testing.TB
	failed   bool
	logged   []string
	cleanups []func()
}

func (f *fakeTB) Log(args ...any) { f.logged = append(f.logged, fmt.Sprint(args...)) }
func (f *fakeTB) Logf(format string, args ...any) {
	f.logged = append(f.logged, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Failed() bool      { return f.failed }
func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) end() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func TestNew_HeldUntilAFailure(t *testing.T) {
	for _, failed := range []bool{false, true} {
		f := &fakeTB{TB: t, failed: failed}
		a, b := New(f, slog.LevelInfo).With("node", "a"), New(f, slog.LevelInfo).With("node", "b")
		writerFor(f).live = false // as without -v, whichever way this test runs
		a.Info("first")
		b.Debug("below the level")
		b.Info("second")
		if len(f.logged) != 0 {
			t.Fatalf("logged while the test ran: %q", f.logged)
		}
		if len(f.cleanups) != 1 {
			t.Fatalf("%d cleanups for one test's loggers, want 1 (one shared writer)", len(f.cleanups))
		}
		f.end()
		a.Info("after the end") // serf goroutines outlive their test
		got := strings.Join(f.logged, "\n")
		if !failed {
			if got != "" {
				t.Errorf("a passing test logged %q", got)
			}
			continue
		}
		if len(f.logged) != 3 || !strings.Contains(f.logged[0], "2 log lines follow") ||
			!strings.Contains(f.logged[1], "msg=first node=a") || !strings.Contains(f.logged[2], "msg=second node=b") {
			t.Errorf("a failed test logged:\n%s\nwant a header, then first (a) and second (b) in order", got)
		}
	}
}
