package owner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeDev makes root/rel for each rel with the given access time (and a
// modification time of mtime), as the kernel would have left them.
func fakeDev(t *testing.T, root string, atimes map[string]time.Time, mtime time.Time) {
	t.Helper()
	for rel, at := range atimes {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, at, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFileSource_NewestAccessTimeOfItsNodes(t *testing.T) {
	now := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	old := now.Add(-3 * time.Hour)
	root := t.TempDir()
	fakeDev(t, root, map[string]time.Time{
		"dev/input/event0": now.Add(-42 * time.Second), // the keyboard
		"dev/input/event1": now.Add(-10 * time.Minute), // the mouse
		"dev/input/mice":   now.Add(-time.Second),      // not an event node
		"dev/tty1":         now.Add(-90 * time.Second),
		"dev/tty2":         old,
		"dev/ttyS0":        now.Add(-time.Second), // a serial port, not a console
		"dev/tty":          now.Add(-time.Second), // the caller's own terminal
		"dev/pts/0":        now.Add(-7 * time.Minute),
		"dev/pts/3":        now.Add(-30 * time.Second),
		"dev/pts/ptmx":     now.Add(-time.Second), // the multiplexer, not a terminal
	}, old)

	for _, tc := range []struct {
		src      *FileSource
		wantIdle time.Duration
	}{
		{NewInputSource(root, clock), 42 * time.Second},
		{NewTTYSource(root, clock), 30 * time.Second},
	} {
		t.Run(tc.src.Name(), func(t *testing.T) {
			r, err := tc.src.Read(context.Background())
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			want := Reading{Source: tc.src.Name(), Idle: tc.wantIdle, LastInput: now.Add(-tc.wantIdle)}
			if !r.LastInput.Equal(want.LastInput) || r.Idle != want.Idle || r.Source != want.Source || r.Declared != "" {
				t.Fatalf("Read = %+v, want %+v", r, want)
			}
		})
	}
}

// Output written to a terminal moves its modification time, not its access
// time: a program printing is not the owner typing.
func TestTTYSource_OutputIsNotInput(t *testing.T) {
	now := time.Now()
	root := t.TempDir()
	fakeDev(t, root, map[string]time.Time{"dev/pts/1": now.Add(-time.Hour)}, now)
	r, err := NewTTYSource(root, func() time.Time { return now }).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Idle != time.Hour {
		t.Fatalf("Idle = %s after an hour without input and output just now; want 1h0m0s", r.Idle)
	}
}

func TestFileSource_FutureAccessTimeIsActive(t *testing.T) {
	now := time.Now()
	root := t.TempDir()
	fakeDev(t, root, map[string]time.Time{"dev/input/event3": now.Add(time.Minute)}, now)
	r, err := NewInputSource(root, func() time.Time { return now }).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Idle != 0 {
		t.Fatalf("Idle = %s for an access time after now (a clock stepped back); want 0", r.Idle)
	}
}

func TestFileSource_NoNodesIsNoData(t *testing.T) {
	root := t.TempDir()
	fakeDev(t, root, map[string]time.Time{"dev/ttyS0": time.Now(), "dev/input/mice": time.Now()}, time.Now())
	for _, src := range []*FileSource{NewInputSource(root, nil), NewTTYSource(root, nil)} {
		_, err := src.Read(context.Background())
		if !errors.Is(err, ErrNoData) {
			t.Errorf("%s: Read = %v, want ErrNoData", src.Name(), err)
		}
	}
}

func TestFileSource_RealDevReads(t *testing.T) {
	// The real /dev of this machine: whatever it holds, Read either answers
	// or says it has no data; it never fails otherwise for lack of rights.
	for _, src := range []*FileSource{NewInputSource("/", nil), NewTTYSource("/", nil)} {
		r, err := src.Read(context.Background())
		if err != nil && !errors.Is(err, ErrNoData) {
			t.Errorf("%s on /: %v", src.Name(), err)
		}
		t.Logf("%s on /: %+v %v", src.Name(), r, err)
	}
}
