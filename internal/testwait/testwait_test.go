package testwait

import (
	"testing"
	"time"
)

// recorder is a testing.TB that records a failure instead of ending the
// test (Fatalf ends only the goroutine it runs in).
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
	panic(r)
}

func run(f func(tb testing.TB)) (failed bool) {
	r := &recorder{}
	defer func() {
		if p := recover(); p != nil && p != r {
			panic(p)
		}
		failed = r.failed != ""
	}()
	f(r)
	return false
}

func TestUntil(t *testing.T) {
	start := time.Now()
	after := func(d time.Duration) func() (bool, string) {
		return func() (bool, string) { return time.Since(start) > d, "" }
	}
	if run(func(tb testing.TB) { Until(tb, time.Second, "soon", after(50*time.Millisecond)) }) {
		t.Fatal("Until failed for a condition that came true in time")
	}
	if !run(func(tb testing.TB) { Until(tb, 30*time.Millisecond, "never", Bool(func() bool { return false })) }) {
		t.Fatal("Until passed for a condition that never came true")
	}
}

func TestHolds(t *testing.T) {
	if run(func(tb testing.TB) { Holds(tb, 50*time.Millisecond, "always", Bool(func() bool { return true })) }) {
		t.Fatal("Holds failed for a condition that held")
	}
	start := time.Now()
	breaks := Bool(func() bool { return time.Since(start) < 20*time.Millisecond })
	if !run(func(tb testing.TB) { Holds(tb, time.Second, "breaks", breaks) }) {
		t.Fatal("Holds passed for a condition that broke inside the window")
	}
}
