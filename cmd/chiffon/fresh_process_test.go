package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProcess_MaxStaleFollowerCutOff runs three orchestrator processes and
// freezes two of them (SIGSTOP): the third, a follower, has neither a
// leader nor a quorum. `chiffon agents -max-stale 2s` against it answers
// from its replica before the freeze, refuses (exit 1, saying which figure
// was too old) once it has not heard from the leader for 2 s, while
// `-stale` still reads the replica; once the others resume it answers
// again.
func TestProcess_MaxStaleFollowerCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	t.Parallel()
	bin := chiffonBinary(t)
	// All on 127.0.0.1: the test certificates name that address, and the
	// CLI checks it.
	var orchs []*orchSpec
	procs := map[string]*proc{}
	for i := range 3 {
		join := ""
		if i > 0 {
			join = orchs[0].gossipAddr
		}
		s := newOrchSpec(t, fmt.Sprintf("ms%d", i+1), "127.0.0.1", 3, join)
		s.args = append(s.args, fastTimings...)
		orchs = append(orchs, s)
		procs[s.name] = s.start(t)
	}
	leader := waitAgreedLeader(t, orchs, 30*time.Second).httpAddr
	var follower *orchSpec
	for _, o := range orchs {
		if o.httpAddr != leader {
			follower = o
			break
		}
	}
	cli := func(args ...string) (string, string, error) {
		return runCmd(bin, append(append([]string{"agents", "-http-addr", follower.httpAddr}, args...),
			pki(t).clientArgs(t, "ms-cli")...)...)
	}
	// The leader records the orchestrators a reconcile after it is
	// elected: wait until the follower's answer lists itself.
	waitFor(t, 20*time.Second, "the follower's answer, before the freeze, listing itself", func() (bool, string) {
		out, errOut, err := cli("-max-stale", "2s")
		return err == nil && strings.Contains(out, "FLAPS") && strings.Contains(out, follower.name),
			fmt.Sprintf("%v\n%s\n%s", err, out, errOut)
	})

	var frozen []*proc
	for _, o := range orchs {
		if o != follower {
			p := procs[o.name]
			p.signal(t, syscall.SIGSTOP)
			frozen = append(frozen, p)
		}
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			for _, p := range frozen {
				p.signal(t, syscall.SIGCONT)
			}
		}
	}
	defer thaw()
	var refusal string
	took := waitFor(t, 30*time.Second, "-max-stale 2s refused on the cut-off follower", func() (bool, string) {
		out, errOut, err := cli("-max-stale", "2s")
		refusal = errOut
		return err != nil && strings.Contains(errOut, "max_stale=2s: this node last heard from the leader") &&
			strings.Contains(errOut, "HTTP 503"), out + errOut
	})
	t.Logf("refused %s after the freeze: %s", took.Round(time.Millisecond), strings.TrimSpace(refusal))
	if out, errOut, err := cli("-stale"); err != nil || !strings.Contains(out, follower.name) {
		t.Fatalf("-stale on the cut-off follower: %v\n%s\n%s", err, out, errOut)
	}
	thaw()
	waitFor(t, 30*time.Second, "-max-stale 2s answered again after the thaw", func() (bool, string) {
		out, errOut, err := cli("-max-stale", "2s")
		return err == nil && strings.Contains(out, follower.name), out + errOut
	})
}
