package sim

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// TestStallWatch_CountsAStallAndTracesIt: a wake-up 1.3 s late (the
// watch's sleep held, as a starved process holds every goroutine) is one
// stall of about that length, and -stall-trace gets an execution trace.
func TestStallWatch_CountsAStallAndTracesIt(t *testing.T) {
	var calls atomic.Int32
	sleep := func(d time.Duration) {
		if calls.Add(1) == 3 {
			d += 1300 * time.Millisecond
		}
		time.Sleep(d)
	}
	path := filepath.Join(t.TempDir(), "stall.trace")
	w, err := startStallWatch(path, sleep)
	if err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 20*time.Second, "the stall to be seen", func() (bool, string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.stalls >= 1, ""
	})
	n, longest, traced, err := w.close()
	if err != nil || !traced {
		t.Fatalf("trace: written %v, err %v", traced, err)
	}
	// One stall (a busy machine may add its own, never fewer), at least
	// as long as the one made.
	if n < 1 || longest < 1300*time.Millisecond {
		t.Errorf("%d stalls, longest %s; want at least the one of 1.3 s", n, longest)
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Errorf("trace file: %d bytes, err %v; want a Go execution trace", len(b), err)
	}
}

// TestStallWatch_NoStallNoTrace: a trace is written only for a stall
// (a stall of this test process on a busy machine is one: then the file
// must be there), and close returns promptly.
func TestStallWatch_NoStallNoTrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stall.trace")
	var ticks atomic.Int32
	w, err := startStallWatch(path, func(time.Duration) { ticks.Add(1); time.Sleep(time.Millisecond) })
	if err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 20*time.Second, "a few ticks of the watch", func() (bool, string) { return ticks.Load() >= 20, "" })
	n, _, traced, err := w.close()
	if err != nil || traced != (n > 0) {
		t.Fatalf("%d stalls, traced %v, err %v; want a trace exactly when there was a stall", n, traced, err)
	}
	if _, err := os.Stat(path); os.IsNotExist(err) == traced {
		t.Errorf("%d stalls, traced %v, but the file: %v", n, traced, err)
	}
}
