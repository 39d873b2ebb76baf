package worker

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// persistentScript is a lines-v1 handler in sh, run with D set to a
// directory. It logs every request line to $D/requests and answers by the
// work_id's prefix (cut out of the line by parameter expansion, which does
// for ids without quotes or backslashes); the default answer is "ok PID PROTOCOL GPU", PID being
// the handler process (the leader of its process group).
const persistentScript = `
while IFS= read -r line; do
  printf '%s\n' "$line" >> "$D/requests"
  id=${line#*'"work_id":"'}; id=${id%%'"'*}
  case $id in
  fail*) echo "fail noise" >&2
    printf '{"work_id":"%s","exit_code":3,"output":"partial","error":"it failed"}\n' "$id" ;;
  die*) echo "dying on $id" >&2; exit 7 ;;
  garbage*) echo 'Loading model...' ;;
  wrongid*) printf '{"work_id":"other","exit_code":0}\n' ;;
  noexit*) printf '{"work_id":"%s","output":"x"}\n' "$id" ;;
  hang*) echo $$ > "$D/handler.pid"; sleep 30 & echo $! > "$D/child.pid"; wait ;;
  closeout*) exec >&-; sleep 30 ;;
  big*) printf '{"work_id":"%s","exit_code":0,"output":"%s"}\n' "$id" "$(head -c 3000 /dev/zero | tr '\0' x)" ;;
  huge*) printf '{"work_id":"%s","exit_code":0,"output":"%s"}\n' "$id" "$(head -c 70000 /dev/zero | tr '\0' x)" ;;
  *) printf '{"work_id":"%s","exit_code":0,"output":"ok %s %s %s"}\n' "$id" "$$" "$CHIFFON_WORK_PROTOCOL" "${CUDA_VISIBLE_DEVICES-unset}" ;;
  esac
done
`

// newPersistent returns a persistent-mode runner of persistentScript with
// its directory.
func newPersistent(t *testing.T, f func(*Config)) (*Runner, string) {
	t.Helper()
	dir := t.TempDir()
	return newRunner(t, "D="+dir+"\n"+persistentScript, func(c *Config) {
		c.HandlerMode = HandlerPersistent
		c.OutputLimit = 1000
		if f != nil {
			f(c)
		}
	}), dir
}

// runOne submits an item and waits for its result.
func runOne(t *testing.T, r *Runner, a Assignment) State {
	t.Helper()
	submit(t, r, a)
	return result(t, r, a.WorkID, a.Attempt)
}

// servedBy runs an item that the handler answers "ok PID ..." and returns
// the PID.
func servedBy(t *testing.T, r *Runner, id string) string {
	t.Helper()
	st := runOne(t, r, Assignment{WorkID: id, Attempt: 1, GPUIndex: -1})
	f := strings.Fields(st.Output)
	if st.Status != StatusSucceeded || len(f) < 2 || f[0] != "ok" {
		t.Fatalf("%s: got %+v", id, st)
	}
	return f[1]
}

// waitGone polls the process table (with a deadline) until pid has gone.
// A killed process whose parent is init may linger as a zombie until
// reaped: that counts as gone.
func waitGone(t *testing.T, pid string) {
	t.Helper()
	testwait.Until(t, 5*time.Second, "process "+pid+" gone", func() (bool, string) {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		return err != nil || strings.Contains(string(stat), ") Z "), string(stat)
	})
}

func readPID(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestNew_HandlerMode(t *testing.T) {
	for _, tt := range []struct {
		mode string
		ok   bool
	}{
		{"", true}, {HandlerExec, true}, {HandlerPersistent, true}, {"Persistent", false}, {"daemon", false},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Handler, cfg.HandlerMode = "cat", tt.mode
			r, err := New(cfg)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				_ = r.Close()
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "-work-handler-mode") ||
				!strings.Contains(err.Error(), "exec or persistent") {
				t.Fatalf("New = %v; want ErrInvalidConfig naming -work-handler-mode and the modes", err)
			}
		})
	}
}

func TestPersistent_OneProcessServesManyItems(t *testing.T) {
	t.Setenv("CUDA_VISIBLE_DEVICES", "")
	os.Unsetenv("CUDA_VISIBLE_DEVICES")
	r, dir := newPersistent(t, nil)
	st := runOne(t, r, Assignment{WorkID: "w1", Attempt: 2, GPUIndex: 1, Payload: json.RawMessage(`{"n": [1, 2],
		"s": "<&>"}`)})
	f := strings.Fields(st.Output)
	if st.Status != StatusSucceeded || st.ExitCode != 0 || len(f) != 4 || f[2] != ProtocolLinesV1 || f[3] != "unset" {
		t.Fatalf("got %+v; want ok PID lines-v1 unset (no CUDA_VISIBLE_DEVICES per item)", st)
	}
	pid := f[1]
	for _, id := range []string{"w2", "w3", "w4"} {
		if got := servedBy(t, r, id); got != pid {
			t.Fatalf("%s served by process %s, want %s", id, got, pid)
		}
	}
	// One compact line per request, work_id first, payload as given
	// (compacted, not HTML-escaped), omitted when there is none.
	b, err := os.ReadFile(filepath.Join(dir, "requests"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	want := []string{
		`{"work_id":"w1","attempt":2,"gpu_index":1,"payload":{"n":[1,2],"s":"<&>"}}`,
		`{"work_id":"w2","attempt":1,"gpu_index":-1}`,
	}
	if len(lines) != 4 || lines[0] != want[0] || lines[1] != want[1] {
		t.Fatalf("requests:\n%s\nwant 4 lines starting\n%s", b, strings.Join(want, "\n"))
	}
}

func TestPersistent_Failures(t *testing.T) {
	tests := []struct {
		id   string
		want func(st State) bool
		// keep: the process that failed the item serves the next one.
		keep bool
	}{
		{"fail-1", func(st State) bool {
			// An answered item's error is the answer's, without stderr.
			return st.Status == StatusFailed && st.ExitCode == 3 && st.Output == "partial" && st.Error == "it failed"
		}, true},
		{"big-1", func(st State) bool {
			return st.Status == StatusSucceeded && len(st.Output) == 1000 && st.Truncated
		}, true},
		{"die-1", func(st State) bool {
			return st.Status == StatusFailed && st.ExitCode == -1 &&
				st.Error == "handler exited: exit status 7; stderr: dying on die-1"
		}, false},
		{"closeout-1", func(st State) bool {
			return st.Status == StatusFailed && strings.HasPrefix(st.Error, "handler closed its stdout without answering (killed)")
		}, false},
		{"garbage-1", func(st State) bool {
			return st.Status == StatusFailed && strings.HasPrefix(st.Error, "handler broke the line protocol: response is not a JSON object") &&
				strings.Contains(st.Error, "Loading model...")
		}, false},
		{"wrongid-1", func(st State) bool {
			return st.Status == StatusFailed && st.Error == `handler broke the line protocol: response for work_id "other", want "wrongid-1"`
		}, false},
		{"noexit-1", func(st State) bool {
			return st.Status == StatusFailed && strings.HasPrefix(st.Error, "handler broke the line protocol: response without exit_code")
		}, false},
		{"huge-1", func(st State) bool {
			return st.Status == StatusFailed && strings.HasPrefix(st.Error, "handler broke the line protocol: response line too long")
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			r, _ := newPersistent(t, nil)
			before := servedBy(t, r, "ok-before")
			st := runOne(t, r, Assignment{WorkID: tt.id, Attempt: 1, GPUIndex: -1})
			if !tt.want(st) {
				t.Fatalf("got %+v", st)
			}
			after := servedBy(t, r, "ok-after")
			switch {
			case tt.keep && after != before:
				t.Fatalf("process %s replaced by %s; want it kept", before, after)
			case !tt.keep && after == before:
				t.Fatalf("process %s kept; want it replaced", before)
			case !tt.keep:
				waitGone(t, before)
			}
		})
	}
}

func TestPersistent_TimeoutKillsProcessGroup(t *testing.T) {
	r, dir := newPersistent(t, func(c *Config) { c.Timeout = 500 * time.Millisecond })
	start := time.Now()
	st := runOne(t, r, Assignment{WorkID: "hang-1", Attempt: 1, GPUIndex: -1})
	if st.Status != StatusFailed || st.ExitCode != -1 || st.Error != "timed out after 500ms" {
		t.Fatalf("got %+v", st)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("timeout took %s", took)
	}
	// The handler and the child it started are gone, and the next item
	// gets a fresh process.
	handler := readPID(t, filepath.Join(dir, "handler.pid"))
	waitGone(t, handler)
	waitGone(t, readPID(t, filepath.Join(dir, "child.pid")))
	if got := servedBy(t, r, "ok-after"); got == handler {
		t.Fatalf("the timed-out process %s served again", got)
	}
}

func TestPersistent_CloseKillsRunningAndIdleProcesses(t *testing.T) {
	r, dir := newPersistent(t, func(c *Config) { c.Concurrency = 2 })
	idle := servedBy(t, r, "ok-1")
	submit(t, r, Assignment{WorkID: "hang-1", Attempt: 1, GPUIndex: -1})
	// The child's pid file is written once the handler has the item.
	testwait.Until(t, 10*time.Second, "the hanging item to start", testwait.Bool(func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "child.pid"))
		return len(b) > 0 && b[len(b)-1] == '\n'
	}))
	running := readPID(t, filepath.Join(dir, "handler.pid"))
	closed := make(chan struct{})
	go func() {
		_ = r.Close()
		_ = r.Close() // idempotent
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	for _, pid := range []string{idle, running, readPID(t, filepath.Join(dir, "child.pid"))} {
		waitGone(t, pid)
	}
	if st, _ := r.Get("hang-1", 1); st.Status != StatusFailed || st.Error != "cancelled" {
		t.Fatalf("hanging item after Close: %+v", st)
	}
}

func TestPersistent_ConcurrencyBoundsProcesses(t *testing.T) {
	r, _ := newPersistent(t, func(c *Config) { c.Concurrency = 4 })
	var ids []string
	for i := range 20 {
		id := "item-" + strconv.Itoa(i)
		ids = append(ids, id)
		submit(t, r, Assignment{WorkID: id, Attempt: 1, GPUIndex: -1})
	}
	pids := map[string]int{}
	for _, id := range ids {
		st := result(t, r, id, 1)
		f := strings.Fields(st.Output)
		if st.Status != StatusSucceeded || len(f) < 2 {
			t.Fatalf("%s: %+v", id, st)
		}
		pids[f[1]]++
	}
	if len(pids) > 4 {
		t.Fatalf("%d handler processes for 4 slots: %v", len(pids), pids)
	}
	t.Logf("items per process: %v", pids)
}

func TestPersistent_CrashLoopBacksOff(t *testing.T) {
	// A handler that dies at once: every item fails, and each start waits
	// longer after the crash before it than the one before (100 ms, then
	// 200 ms). The handler writes down when it starts: a start comes at
	// least the backoff after the previous crash, hence after the previous
	// start (an item's own times say nothing: on a busy machine the backoff
	// may have run out before the next item is taken).
	starts := filepath.Join(t.TempDir(), "starts")
	crashing := func(handler string, timeout time.Duration) *Runner {
		return newRunner(t, handler, func(c *Config) {
			c.HandlerMode = HandlerPersistent
			c.Timeout = timeout
		})
	}
	// The item's timeout covers the backoff and the run; on a busy
	// machine a shell that exits at once may take most of a second.
	r := crashing(`date +%s.%N >> `+starts+`; echo boom >&2; exit 1`, 30*time.Second)
	for _, id := range []string{"c1", "c2", "c3"} {
		st := runOne(t, r, Assignment{WorkID: id, Attempt: 1, GPUIndex: -1})
		if st.Status != StatusFailed || st.Error != "handler exited: exit status 1; stderr: boom" {
			t.Fatalf("%s: got %+v", id, st)
		}
	}
	b, err := os.ReadFile(starts)
	if err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	for line := range strings.Lines(string(b)) {
		sec, nsec, _ := strings.Cut(strings.TrimSpace(line), ".")
		s, err1 := strconv.ParseInt(sec, 10, 64)
		ns, err2 := strconv.ParseInt(nsec, 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("start time %q", line)
		}
		at = append(at, time.Unix(s, ns))
	}
	if len(at) != 3 {
		t.Fatalf("%d handler starts for 3 items, want 3", len(at))
	}
	for i, backoff := range []time.Duration{backoffMin, 2 * backoffMin} {
		if gap := at[i+1].Sub(at[i]); gap < backoff {
			t.Fatalf("start %d came %s after start %d; want at least the %s backoff", i+2, gap, i+1, backoff)
		}
	}

	// A long backoff is cut short by the item's timeout, and by Close.
	r = crashing(`echo boom >&2; exit 1`, time.Second)
	x := r.ex.(*persistentExecutor)
	x.mu.Lock()
	x.notBefore = time.Now().Add(time.Hour)
	x.mu.Unlock()
	if st := runOne(t, r, Assignment{WorkID: "c4", Attempt: 1, GPUIndex: -1}); st.Error != "timed out after 1s" {
		t.Fatalf("c4: got %+v", st)
	}
	submit(t, r, Assignment{WorkID: "c5", Attempt: 1, GPUIndex: -1})
	closed := make(chan struct{})
	go func() {
		_ = r.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return during a backoff")
	}
	if st, _ := r.Get("c5", 1); st.Status != StatusFailed || !strings.Contains(st.Error, "cancelled") {
		t.Fatalf("c5 after Close: %+v", st)
	}
}

func TestPersistent_StartFailure(t *testing.T) {
	t.Setenv("PATH", "") // no sh to be found
	r := newRunner(t, "cat", func(c *Config) { c.HandlerMode = HandlerPersistent })
	st := runOne(t, r, Assignment{WorkID: "w", Attempt: 1, GPUIndex: -1})
	if st.Status != StatusFailed || st.ExitCode != -1 || !strings.HasPrefix(st.Error, "run handler: ") {
		t.Fatalf("got %+v", st)
	}
}

// BenchmarkRunner_HandlerModes compares a process per item (cat) with one
// persistent sh handler per slot answering from the shell alone.
func BenchmarkRunner_HandlerModes(b *testing.B) {
	for _, bm := range []struct{ mode, handler string }{
		{HandlerExec, `cat`},
		{HandlerPersistent, `while IFS= read -r line; do id=${line#*'"work_id":"'}; id=${id%%'"'*}; ` +
			`printf '{"work_id":"%s","exit_code":0,"output":"ok"}\n' "$id"; done`},
	} {
		b.Run(bm.mode, func(b *testing.B) {
			r := newRunner(b, bm.handler, func(c *Config) { c.HandlerMode, c.Concurrency, c.Logger = bm.mode, 2, nil })
			payload := json.RawMessage(`{"n":1}`)
			i := 0
			for b.Loop() {
				id := strconv.Itoa(i)
				i++
				submit(b, r, Assignment{WorkID: id, Attempt: 1, GPUIndex: -1, Payload: payload})
				// Two in flight, as the two slots allow.
				if i%2 == 0 {
					for _, done := range []string{strconv.Itoa(i - 2), id} {
						if st := result(b, r, done, 1); st.Status != StatusSucceeded {
							b.Fatalf("%s: %+v", done, st)
						}
						r.Forget(done, 1)
					}
				}
			}
			b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
