// Package testwait is how Chiffon's tests wait: they poll a condition on a
// ticker until a deadline, and never sleep in the hope that something has
// happened by then.
package testwait

import (
	"testing"
	"time"
)

// Interval is how often Until and Holds look.
const Interval = 10 * time.Millisecond

// Until polls cond every Interval until it reports true, and returns how
// long that took. When timeout passes first it fails tb, naming what it
// waited for and the last detail cond gave.
func Until(tb testing.TB, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	tb.Helper()
	return Every(tb, Interval, timeout, what, cond)
}

// Every is Until with another polling interval, for conditions that cost
// a request or a process to check.
func Every(tb testing.TB, every, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	tb.Helper()
	start := time.Now()
	var seen string
	if !Poll(every, timeout, func() (ok bool) { ok, seen = cond(); return ok }) {
		tb.Fatalf("timed out after %s waiting for %s; last seen: %s", timeout, what, seen)
	}
	return time.Since(start)
}

// Poll polls cond every interval until it reports true (true) or timeout
// passes (false), for callers that say themselves what went wrong.
func Poll(every, timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond() // one last look: the deadline may have won a close race
		case <-tick.C:
		}
	}
	return true
}

// Holds polls cond every Interval for all of window and fails tb the
// first time it reports false: a negative check ("X never happens") that
// looks throughout the window rather than once at its end.
func Holds(tb testing.TB, window time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	end := time.NewTimer(window)
	defer end.Stop()
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for {
		if ok, seen := cond(); !ok {
			tb.Fatalf("%s did not hold: %s", what, seen)
		}
		select {
		case <-end.C:
			return
		case <-tick.C:
		}
	}
}

// Bool adapts a condition without details for Until and Holds.
func Bool(cond func() bool) func() (bool, string) {
	return func() (bool, string) { return cond(), "" }
}

// Err adapts a condition that says what is missing as an error (nil when
// it holds) for Until and Holds.
func Err(cond func() error) func() (bool, string) {
	return func() (bool, string) {
		if err := cond(); err != nil {
			return false, err.Error()
		}
		return true, ""
	}
}
