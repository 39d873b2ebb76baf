package worker

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// markerRunner is a runner whose handler appends "work_id attempt" to a
// marker file as the first thing it does, then runs script: the marker
// says which attempts started.
func markerRunner(t *testing.T, script string, f func(*Config)) (*Runner, string) {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "started")
	return newRunner(t, `echo "$CHIFFON_WORK_ID $CHIFFON_WORK_ATTEMPT" >> `+marker+`; `+script, f), marker
}

func started(t *testing.T, marker string) []string {
	t.Helper()
	b, err := os.ReadFile(marker)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestRunner_ExpiredLeaseNeverStarts: an assignment read after its lease
// (as when it sat in the socket of a frozen process) is refused, over
// HTTP too, and its handler never starts.
func TestRunner_ExpiredLeaseNeverStarts(t *testing.T) {
	r, marker := markerRunner(t, `cat`, nil)
	past := time.Now().Add(-time.Millisecond)
	if _, _, err := r.Submit(Assignment{WorkID: "late", Attempt: 1, GPUIndex: -1, LeaseExpiresAt: past}); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("expired lease: %v, want ErrLeaseExpired", err)
	}
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(srv.Close)
	c, addr := &Client{}, strings.TrimPrefix(srv.URL, "http://")
	if _, err := c.Submit(context.Background(), "desk-1", addr, Assignment{WorkID: "late-http", Attempt: 1, GPUIndex: -1, LeaseExpiresAt: past}); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("expired lease over HTTP: %v, want ErrLeaseExpired (410)", err)
	}
	// A live lease runs, so the marker would have caught a start.
	submit(t, r, Assignment{WorkID: "fresh", Attempt: 1, GPUIndex: -1, Payload: json.RawMessage(`1`),
		LeaseExpiresAt: time.Now().Add(time.Minute)})
	if st := result(t, r, "fresh", 1); st.Status != StatusSucceeded {
		t.Fatalf("fresh lease: %+v", st)
	}
	if got := started(t, marker); len(got) != 1 || got[0] != "fresh 1" {
		t.Fatalf("handlers started: %q; want only fresh 1", got)
	}
}

// TestRunner_QueuedPastLeaseNeverStarts: an assignment that waits for a
// slot longer than its lease is not started when the slot frees; it ends
// expired.
func TestRunner_QueuedPastLeaseNeverStarts(t *testing.T) {
	release := filepath.Join(t.TempDir(), "go")
	r, marker := markerRunner(t, `while [ ! -f `+release+` ]; do sleep 0.02; done`, nil) // one slot
	submit(t, r, Assignment{WorkID: "busy", Attempt: 1, GPUIndex: -1})
	testwait.Until(t, 10*time.Second, "busy running", func() (bool, string) {
		st, _ := r.Get("busy", 1)
		return st.Status == StatusRunning, st.Status
	})
	lease := time.Now().Add(300 * time.Millisecond)
	submit(t, r, Assignment{WorkID: "queued", Attempt: 1, GPUIndex: -1, LeaseExpiresAt: lease})
	testwait.Until(t, 10*time.Second, "the queued item's lease to pass", func() (bool, string) {
		st, _ := r.Get("queued", 1)
		return time.Now().After(lease) && st.Status == StatusQueued, st.Status
	})
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if st := result(t, r, "queued", 1); st.Status != StatusExpired || !st.Done() || st.ExitCode != -1 {
		t.Fatalf("queued past its lease: %+v; want expired", st)
	}
	if got := started(t, marker); len(got) != 1 || got[0] != "busy 1" {
		t.Fatalf("handlers started: %q; want only busy 1", got)
	}
}

// TestRunner_SupersededAttemptNeverStarts: once the leader drops an
// attempt, or a higher one was seen (even if since forgotten), a late copy
// of the assignment is refused; a dropped running handler is killed.
func TestRunner_SupersededAttemptNeverStarts(t *testing.T) {
	r, marker := markerRunner(t, `sleep 30`, func(c *Config) { c.Concurrency = 4 })
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(srv.Close)
	c, addr := &Client{}, strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()

	// The leader says attempt 1 of d is superseded before it arrives.
	if err := c.Drop(ctx, "desk-1", addr, "d", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, "desk-1", addr, Assignment{WorkID: "d", Attempt: 1, GPUIndex: -1}); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("dropped attempt: %v, want ErrStaleAttempt", err)
	}

	// Attempt 2 of f ran and was forgotten; a late attempt 1 is stale.
	r2, marker2 := markerRunner(t, `cat`, nil)
	submit(t, r2, Assignment{WorkID: "f", Attempt: 2, GPUIndex: -1})
	result(t, r2, "f", 2)
	r2.Forget("f", 2)
	if _, _, err := r2.Submit(Assignment{WorkID: "f", Attempt: 1, GPUIndex: -1}); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("attempt 1 after attempt 2 was forgotten: %v, want ErrStaleAttempt", err)
	}
	if got := started(t, marker2); len(got) != 1 || got[0] != "f 2" {
		t.Fatalf("handlers started: %q; want only f 2", got)
	}

	// A running attempt the leader drops is killed and forgotten.
	if _, err := c.Submit(ctx, "desk-1", addr, Assignment{WorkID: "run", Attempt: 1, GPUIndex: -1}); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, "run's handler started", func() (bool, string) {
		got := started(t, marker)
		return len(got) == 1, strings.Join(got, ",")
	})
	held, err := c.List(ctx, "desk-1", addr)
	if err != nil || len(held) != 1 || held[0].WorkID != "run" {
		t.Fatalf("List = %+v, %v; want run", held, err)
	}
	if err := c.Drop(ctx, "desk-1", addr, "run", 1); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Get("run", 0); ok {
		t.Fatal("a dropped attempt is still held")
	}
	if _, err := c.Submit(ctx, "desk-1", addr, Assignment{WorkID: "run", Attempt: 1, GPUIndex: -1}); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("dropped running attempt resent: %v, want ErrStaleAttempt", err)
	}
	done := make(chan struct{})
	go func() { _ = r.Close(); close(done) }() // waits for the killed handler
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the dropped handler (sleep 30) was not killed")
	}
	if got := started(t, marker); len(got) != 1 || got[0] != "run 1" {
		t.Fatalf("handlers started: %q; want only run 1", got)
	}
}
