package worker

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// ownerHandler writes its shell's PID to $DIR/pid-$CHIFFON_WORK_ID and
// waits for $DIR/go before it answers "done".
func ownerHandler(dir string) string {
	return `echo $$ > "` + dir + `/pid-$CHIFFON_WORK_ID"; while [ ! -f "` + dir + `/go" ]; do sleep 0.02; done; echo done`
}

// procState is the state letter of /proc/PID/stat ("S", "R", "T", ...).
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "gone"
	}
	// pid (comm) state ...: comm may hold spaces, so split after the last ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return fields[0]
}

// stoppedState reports whether process pid is stopped: in state T, or in D
// waiting on a vfork child that is itself stopped (the shell forks its
// `sleep` with vfork; SIGSTOP of the group between the vfork and the exec
// leaves the shell in D until the child runs on). It returns the states
// seen, for the failure message.
func stoppedState(t *testing.T, pid int) (bool, string) {
	t.Helper()
	st := procState(t, pid)
	if st == "T" || st != "D" {
		return st == "T", "state " + st
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) && procState(t, child) == "T" {
			return true, "state D, its child " + e.Name() + " stopped"
		}
	}
	return false, "state D, no stopped child"
}

func handlerPID(t *testing.T, dir, id string) int {
	t.Helper()
	var pid int
	testwait.Until(t, 10*time.Second, "the handler writes its pid", func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(dir, "pid-"+id))
		if err != nil {
			return false, err.Error()
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil, "pid file: " + string(b)
	})
	return pid
}

func TestRunner_OwnerSuspendStopsTheProcessGroupAndContinuesIt(t *testing.T) {
	for _, mode := range []string{HandlerExec, HandlerPersistent} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			handler := ownerHandler(dir)
			if mode == HandlerPersistent {
				// One JSON line per item: the same wait, then the answer.
				handler = `while read -r line; do id=$(echo "$line" | sed 's/.*"work_id":"\([^"]*\)".*/\1/'); echo $$ > "` + dir +
					`/pid-$id"; while [ ! -f "` + dir + `/go" ]; do sleep 0.02; done; printf '{"work_id":"%s","exit_code":0,"output":"done"}\n' "$id"; done`
			}
			r := newRunner(t, handler, func(c *Config) { c.HandlerMode = mode })
			submit(t, r, Assignment{WorkID: "w1", Attempt: 1, GPUIndex: -1})
			pid := handlerPID(t, dir, "w1")

			if n, err := r.OwnerActive(OwnerSuspend); err != nil || n != 1 {
				t.Fatalf("OwnerActive(suspend) = %d, %v; want 1 handler suspended", n, err)
			}
			testwait.Until(t, 5*time.Second, "the handler is stopped (state T)", func() (bool, string) {
				return stoppedState(t, pid)
			})
			if got := r.Suspended(); len(got) != 1 || got[0] != "w1" {
				t.Fatalf("Suspended() = %v, want [w1]", got)
			}
			// A stopped handler does not see its go file.
			if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			testwait.Holds(t, 300*time.Millisecond, "the suspended handler does not finish", func() (bool, string) {
				st, _ := r.Get("w1", 1)
				stopped, seen := stoppedState(t, pid)
				return st.Status == StatusRunning && stopped, st.Status + ", " + seen
			})
			// New work is handed back unstarted while the owner is active.
			submit(t, r, Assignment{WorkID: "w2", Attempt: 1, GPUIndex: -1})
			if mode == HandlerExec { // one slot: w2 waits for w1's in persistent mode too, so check exec only
				r2 := newRunner(t, handler, nil)
				_, _ = r2.OwnerActive(OwnerSuspend)
				submit(t, r2, Assignment{WorkID: "w3", Attempt: 1, GPUIndex: -1})
				if st := result(t, r2, "w3", 1); st.Status != StatusYielded {
					t.Fatalf("work submitted while the owner is active: %+v, want %s", st, StatusYielded)
				}
			}

			if n := r.OwnerIdle(); n != 1 {
				t.Fatalf("OwnerIdle() = %d, want 1 handler continued", n)
			}
			if st := result(t, r, "w1", 1); st.Status != StatusSucceeded || strings.TrimSpace(st.Output) != "done" {
				t.Fatalf("w1 after the owner left: %+v, want succeeded with done", st)
			}
			if st := result(t, r, "w2", 1); st.Status != StatusSucceeded {
				t.Fatalf("w2 after the owner left: %+v, want succeeded (it waited for the slot)", st)
			}
		})
	}
}

func TestRunner_OwnerRequeueHandsTheWorkBack(t *testing.T) {
	dir := t.TempDir()
	r := newRunner(t, ownerHandler(dir), nil)
	submit(t, r, Assignment{WorkID: "w1", Attempt: 1, GPUIndex: -1})
	pid := handlerPID(t, dir, "w1")
	if n, err := r.OwnerActive(OwnerRequeue); err != nil || n != 1 {
		t.Fatalf("OwnerActive(requeue) = %d, %v; want 1", n, err)
	}
	st := result(t, r, "w1", 1)
	if st.Status != StatusYielded || !st.Done() {
		t.Fatalf("w1 = %+v, want %s (handed back)", st, StatusYielded)
	}
	testwait.Until(t, 5*time.Second, "the handler's process is gone", func() (bool, string) {
		s := procState(t, pid)
		return s == "gone" || s == "Z", "state " + s
	})
	// The leader forgets it and places attempt 2 once the owner has left.
	r.Forget("w1", 1)
	r.OwnerIdle()
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	submit(t, r, Assignment{WorkID: "w1", Attempt: 2, GPUIndex: -1})
	if st := result(t, r, "w1", 2); st.Status != StatusSucceeded {
		t.Fatalf("attempt 2 = %+v, want succeeded", st)
	}
	if _, _, err := r.Submit(Assignment{WorkID: "w1", Attempt: 1, GPUIndex: -1}); err == nil {
		t.Fatal("the yielded attempt 1 was taken again; want it fenced")
	}
}

func TestRunner_OwnerFinishLetsRunningWorkEndAndTakesNothingNew(t *testing.T) {
	dir := t.TempDir()
	r := newRunner(t, ownerHandler(dir), func(c *Config) { c.Concurrency = 2 })
	submit(t, r, Assignment{WorkID: "w1", Attempt: 1, GPUIndex: -1})
	pid := handlerPID(t, dir, "w1")
	if n, err := r.OwnerActive(OwnerFinish); err != nil || n != 0 {
		t.Fatalf("OwnerActive(finish) = %d, %v; want 0 handlers touched", n, err)
	}
	if s := procState(t, pid); s == "T" {
		t.Fatalf("finish stopped the handler (state %s)", s)
	}
	submit(t, r, Assignment{WorkID: "w2", Attempt: 1, GPUIndex: -1})
	if st := result(t, r, "w2", 1); st.Status != StatusYielded {
		t.Fatalf("w2 = %+v, want %s: nothing new starts while the owner is active", st, StatusYielded)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if st := result(t, r, "w1", 1); st.Status != StatusSucceeded {
		t.Fatalf("w1 = %+v, want succeeded", st)
	}
	if _, err := r.OwnerActive("pause"); err == nil {
		t.Fatal("OwnerActive(pause) accepted an unknown action")
	}
}
