package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

func newRunner(t testing.TB, handler string, f func(*Config)) *Runner {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Handler = handler
	cfg.Logger = testlog.New(t, slog.LevelInfo)
	if f != nil {
		f(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// result waits (with a deadline) for an attempt to finish.
func result(t testing.TB, r *Runner, id string, attempt int) State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		st, err := r.Wait(ctx, id, attempt, StatusRunning)
		if err != nil {
			t.Fatal(err)
		}
		if st.Done() {
			return st
		}
		if ctx.Err() != nil {
			t.Fatalf("%s did not finish: %+v", id, st)
		}
		if st.Status == StatusQueued {
			st2, _ := r.Wait(ctx, id, attempt, StatusQueued)
			if st2.Done() {
				return st2
			}
		}
	}
}

func submit(t testing.TB, r *Runner, a Assignment) {
	t.Helper()
	if _, created, err := r.Submit(a); err != nil || !created {
		t.Fatalf("Submit(%s) = %v, created %v", a.WorkID, err, created)
	}
}

func TestRunner_Results(t *testing.T) {
	tests := []struct {
		name    string
		handler string
		a       Assignment
		check   func(t *testing.T, st State)
	}{
		{
			name:    "payload on stdin, work id and GPU in the environment",
			handler: `printf '%s|%s|%s|' "$CHIFFON_WORK_ID" "$CUDA_VISIBLE_DEVICES" "$CHIFFON_WORK_ATTEMPT"; cat`,
			a:       Assignment{WorkID: "w1", Attempt: 2, GPUIndex: 1, Payload: json.RawMessage(`{"n":1}`)},
			check: func(t *testing.T, st State) {
				if st.Status != StatusSucceeded || st.ExitCode != 0 || st.Output != `w1|1|2|{"n":1}` {
					t.Fatalf("got %+v", st)
				}
			},
		},
		{
			name:    "no GPU leaves CUDA_VISIBLE_DEVICES alone",
			handler: `printf '%s' "${CUDA_VISIBLE_DEVICES-unset}"`,
			a:       Assignment{WorkID: "w", Attempt: 1, GPUIndex: -1},
			check: func(t *testing.T, st State) {
				if st.Output != "unset" {
					t.Fatalf("CUDA_VISIBLE_DEVICES = %q", st.Output)
				}
			},
		},
		{
			name:    "non-zero exit fails with the exit code and stderr",
			handler: `echo partial; echo oops >&2; exit 3`,
			a:       Assignment{WorkID: "w", Attempt: 1, GPUIndex: -1},
			check: func(t *testing.T, st State) {
				if st.Status != StatusFailed || st.ExitCode != 3 || st.Output != "partial\n" || !strings.Contains(st.Error, "oops") {
					t.Fatalf("got %+v", st)
				}
			},
		},
		{
			name:    "output is capped",
			handler: `head -c 100000 /dev/zero | tr '\0' x`,
			a:       Assignment{WorkID: "w", Attempt: 1, GPUIndex: -1},
			check: func(t *testing.T, st State) {
				if st.Status != StatusSucceeded || len(st.Output) != 1000 || !st.Truncated {
					t.Fatalf("status %s, %d bytes, truncated %v", st.Status, len(st.Output), st.Truncated)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CUDA_VISIBLE_DEVICES", "")
			os.Unsetenv("CUDA_VISIBLE_DEVICES")
			r := newRunner(t, tt.handler, func(c *Config) { c.OutputLimit = 1000 })
			submit(t, r, tt.a)
			tt.check(t, result(t, r, tt.a.WorkID, tt.a.Attempt))
		})
	}
}

func TestRunner_TimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// The handler starts a grandchild that would outlive a plain kill.
	r := newRunner(t, `sleep 30 & echo $! > `+pidFile+`; wait`, func(c *Config) { c.Timeout = 300 * time.Millisecond })
	start := time.Now()
	submit(t, r, Assignment{WorkID: "slow", Attempt: 1, GPUIndex: -1})
	st := result(t, r, "slow", 1)
	if st.Status != StatusFailed || st.ExitCode != -1 || !strings.Contains(st.Error, "timed out") {
		t.Fatalf("got %+v", st)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("timeout took %s", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	// A killed child may linger as a zombie until reaped by init.
	waitGone(t, strings.TrimSpace(string(b)))
}

func TestRunner_ConcurrencyLimit(t *testing.T) {
	dir := t.TempDir()
	// Each run records itself as running, checks how many run at once, and
	// waits for a release file.
	handler := `touch ` + dir + `/run.$CHIFFON_WORK_ID; ls ` + dir + ` | grep -c '^run\.' >> ` + dir + `/counts; ` +
		`while [ ! -f ` + dir + `/release ]; do sleep 0.02; done; rm ` + dir + `/run.$CHIFFON_WORK_ID`
	r := newRunner(t, handler, func(c *Config) { c.Concurrency = 2 })
	for _, id := range []string{"a", "b", "c", "d"} {
		submit(t, r, Assignment{WorkID: id, Attempt: 1, GPUIndex: -1})
	}
	// Two run, two wait in the queue.
	testwait.Until(t, 10*time.Second, "2 running and 2 queued", func() (bool, string) {
		queued, running := 0, 0
		for _, id := range []string{"a", "b", "c", "d"} {
			st, _ := r.Get(id, 1)
			switch st.Status {
			case StatusQueued:
				queued++
			case StatusRunning:
				running++
			}
		}
		return queued == 2 && running == 2, fmt.Sprintf("queued %d running %d", queued, running)
	})
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		if st := result(t, r, id, 1); st.Status != StatusSucceeded {
			t.Fatalf("%s: %+v", id, st)
		}
	}
	counts, _ := os.ReadFile(filepath.Join(dir, "counts"))
	for _, c := range strings.Fields(string(counts)) {
		if c != "1" && c != "2" {
			t.Fatalf("%s handlers ran at once (counts %q)", c, counts)
		}
	}
}

func TestRunner_Idempotent(t *testing.T) {
	r := newRunner(t, `cat`, nil)
	a := Assignment{WorkID: "w", Attempt: 2, GPUIndex: -1, Payload: json.RawMessage(`1`)}
	submit(t, r, a)
	if _, created, err := r.Submit(a); err != nil || created {
		t.Fatalf("repeat Submit = %v, created %v; want existing", err, created)
	}
	if _, _, err := r.Submit(Assignment{WorkID: "w", Attempt: 1}); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("older attempt: %v, want ErrStaleAttempt", err)
	}
	result(t, r, "w", 2)
	if _, ok := r.Get("w", 1); ok {
		t.Fatal("Get of another attempt found something")
	}
	r.Forget("w", 2)
	if _, ok := r.Get("w", 0); ok {
		t.Fatal("Forget left the result")
	}
	if _, _, err := r.Submit(Assignment{WorkID: "x", Attempt: 1, Payload: json.RawMessage(`{`)}); !errors.Is(err, ErrBadAssignment) {
		t.Fatalf("bad payload: %v", err)
	}
	_ = r.Close()
	if _, _, err := r.Submit(Assignment{WorkID: "y", Attempt: 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestHandler_Protocol(t *testing.T) {
	r := newRunner(t, `cat`, func(c *Config) { c.Token = "s3cret" })
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()

	if _, err := (&Client{}).Submit(ctx, "desk-1", addr, Assignment{WorkID: "w", Attempt: 1}); !errors.Is(err, ErrHTTP) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("no token: %v", err)
	}
	if _, err := (&Client{Token: "nope"}).Submit(ctx, "desk-1", addr, Assignment{WorkID: "w", Attempt: 1}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("wrong token: %v", err)
	}
	c := &Client{Token: "s3cret"}
	a := Assignment{WorkID: "w/1", Attempt: 1, GPUIndex: -1, Payload: json.RawMessage(`{"hello":"world"}`)}
	if _, err := c.Submit(ctx, "desk-1", addr, a); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, "desk-1", addr, a); err != nil { // idempotent
		t.Fatal(err)
	}
	var st State
	deadline := time.Now().Add(20 * time.Second)
	for !st.Done() {
		var err error
		if st, err = c.Get(ctx, "desk-1", addr, "w/1", 1, st.Status, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no result: %+v", st)
		}
	}
	if st.Output != `{"hello":"world"}` || st.Status != StatusSucceeded {
		t.Fatalf("got %+v", st)
	}
	if _, err := c.Get(ctx, "desk-1", addr, "w/1", 2, "", 0); !errors.Is(err, ErrUnknownWork) {
		t.Fatalf("other attempt: %v, want ErrUnknownWork", err)
	}
	if err := c.Forget(ctx, "desk-1", addr, "w/1", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "desk-1", addr, "w/1", 1, "", 0); !errors.Is(err, ErrUnknownWork) {
		t.Fatalf("after Forget: %v, want ErrUnknownWork", err)
	}
}

// TestHandler_RefusalsDoNotFloodTheLog: anyone who reaches a desktop's
// work port can send requests it refuses. Every one is answered (403 with
// the JSON error), but the log gets one line per remote host and reason
// a minute, not one per request.
func TestHandler_RefusalsDoNotFloodTheLog(t *testing.T) {
	logs := &testlog.Buffer{}
	r := newRunner(t, `cat`, func(c *Config) {
		c.Token = "s3cret"
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(srv.Close)
	for i := range 50 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+PathWork, strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer nope")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), `"error":"wrong token"`) {
			t.Fatalf("request %d: %s %s; want 403 with the JSON error", i, resp.Status, b)
		}
	}
	// Another reason from the same host is its own line.
	resp, err := http.Post(srv.URL+PathWork, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := strings.Count(logs.String(), "refused a work request"); n != 2 {
		t.Fatalf("%d refusal lines for 50 wrong tokens and one missing token; want 2:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "reason=\"wrong token\"") || !strings.Contains(logs.String(), "remote=127.0.0.1:") {
		t.Errorf("the refusal line lacks the reason or the remote address:\n%s", logs.String())
	}
}
