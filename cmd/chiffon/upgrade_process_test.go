package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
)

// release is one line of scripts/releases.txt.
type release struct{ version, commit string }

// lastRelease reads the newest release from scripts/releases.txt.
func lastRelease(t *testing.T, root string) release {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "scripts", "releases.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last release
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 || strings.HasPrefix(fields[0], "#") || fields[0] == "next" {
			continue
		}
		if len(fields[1]) != 40 {
			t.Fatalf("scripts/releases.txt: %q: want VERSION and a full 40-digit commit hash", sc.Text())
		}
		last = release{fields[0], fields[1]}
	}
	if err := sc.Err(); err != nil || last.commit == "" {
		t.Fatalf("scripts/releases.txt lists no release (%v)", err)
	}
	return last
}

// buildRelease builds rel's cmd/chiffon from its commit (git archive into a
// temporary tree, then go build), or skips the test when this clone's
// history lacks the commit (a shallow clone: .ci/run unshallows its own).
func buildRelease(t *testing.T, root string, rel release) string {
	t.Helper()
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", rel.commit+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("release %s's commit %s is not in this clone's git history (shallow? run git fetch --unshallow): %v %s",
			rel.version, rel.commit, err, out)
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh", root, rel.commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", rel.commit, err, out)
	}
	bin := filepath.Join(t.TempDir(), "chiffon-"+rel.version)
	// -trimpath keeps the build cache's keys free of this temporary
	// directory, so a later run reuses the compiled packages.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+rel.version, "-o", bin, "./cmd/chiffon")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=1", "GOFLAGS=-mod=mod", "GOWORK=off")
	if os.Getenv("CGO_CFLAGS") == "" {
		build.Env = append(build.Env, "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
	}
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build release %s from %s: %v\n%s", rel.version, rel.commit, err, out)
	}
	return bin
}

// rotation is the set of orchestrators the readers send requests to, as a
// load balancer in front of them would: one is taken out (and its requests
// in flight allowed to finish) before it is stopped, and put back once
// its /readyz says so.
type rotation struct {
	mu sync.Mutex
	// in and inflight are guarded by mu.
	in       []*orchSpec
	inflight map[*orchSpec]int
	next     int
}

func (r *rotation) pick() *orchSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.in) == 0 {
		return nil
	}
	o := r.in[r.next%len(r.in)]
	r.next++
	r.inflight[o]++
	return o
}

func (r *rotation) done(o *orchSpec) {
	r.mu.Lock()
	r.inflight[o]--
	r.mu.Unlock()
}

func (r *rotation) remove(t *testing.T, o *orchSpec) {
	r.mu.Lock()
	for i, x := range r.in {
		if x == o {
			r.in = append(r.in[:i:i], r.in[i+1:]...)
			break
		}
	}
	r.mu.Unlock()
	waitFor(t, 30*time.Second, "requests in flight to "+o.name+" to finish", func() (bool, string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.inflight[o] == 0, fmt.Sprint(r.inflight[o], " in flight")
	})
}

func (r *rotation) add(o *orchSpec) {
	r.mu.Lock()
	r.in = append(r.in, o)
	r.mu.Unlock()
}

// TestProcess_RollingUpgradeFromPreviousRelease runs a cluster on the
// previous release's binary (scripts/releases.txt, built from its commit):
// three orchestrators with the RabbitMQ bridge and two desktops that run
// work. Then it upgrades it to this tree's binary one node at a time, as
// docs/OPERATIONS.md says (followers, the leader last, then the desktops;
// each stopped with SIGTERM, a graceful leave, and restarted on its data
// dir), while readers ask for capacity without pause and a producer sends
// work through the broker. It checks what an operator needs: no read
// failed, every work item sent got its result, and the registry is
// intact (the same agent ids, every node online, three voters).
func TestProcess_RollingUpgradeFromPreviousRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("process test with a real broker")
	}
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rel := lastRelease(t, root)
	oldBin := buildRelease(t, root, rel)
	// The harness passes flags of the current tree (-owner-idle 0, say):
	// the old binary gets only those it knows, as an operator's old config
	// would have.
	oldFlags := knownFlags(t, oldBin)
	newBin := chiffonBinary(t)
	if out, _, err := runCmd(oldBin, "version"); err != nil || !strings.HasPrefix(out, "Chiffon "+rel.version+" (") {
		t.Fatalf("%s version: %q %v", oldBin, out, err)
	}
	t.Logf("release %s built from %s in %s", rel.version, rel.commit[:7], time.Since(start).Round(time.Millisecond))
	broker := dispatchtest.StartForTest(t)

	// The cluster, all on the old binary.
	procs := map[string]*proc{}
	var orchs []*orchSpec
	for i := range 3 {
		join := ""
		if i > 0 {
			join = orchs[0].gossipAddr
		}
		s := newOrchSpec(t, fmt.Sprintf("up-orch%d", i+1), fmt.Sprintf("127.0.9.%d", i+1), 3, join)
		s.args = append(append(s.args, "-amqp-url", broker.URL), fastTimings...)
		orchs = append(orchs, s)
		procs[s.name] = startBinary(t, oldBin, s.name, oldFlags(s.argv()), s.env)
	}
	ranDir := t.TempDir()
	ranPaths := map[string]string{}
	var desks []*nodeSpec
	for i, name := range []string{"up-desk-a", "up-desk-b"} {
		ip := fmt.Sprintf("127.0.9.%d", i+4)
		s := newNodeSpec(t, name, ip).withMetrics(t,
			metricsJSON(t, 1, 16, 32, "nvidia", gpuJSON{0, "NVIDIA GeForce RTX 4090", 24, 20, 5}))
		ranPaths[name] = filepath.Join(ranDir, name+".log")
		handler := fmt.Sprintf(`cat >/dev/null; echo "$CHIFFON_WORK_ID" >> '%s'; echo ok`, ranPaths[name])
		s.args = append([]string{"-retry-join", orchs[0].gossipAddr, "-retry-interval", "200ms",
			"-work-handler", handler, "-work-addr", fmt.Sprintf("%s:%d", ip, freeTCPPort(t, ip)),
			"-work-concurrency", "4"}, fastTimings...)
		desks = append(desks, s)
		procs[name] = startBinary(t, oldBin, name, oldFlags(s.argv()), s.env)
	}

	leaderName := func() (string, string) {
		o, seen := agreedLeader(orchs, nil)
		if o == nil {
			return "", seen
		}
		return o.name, o.name
	}
	// intact checks one orchestrator's replica: every node online under
	// the agent id it had at the start (ids empty: record them).
	ids := map[string]string{}
	intact := func(o *orchSpec) (bool, string) {
		a, err := agentsOn(o.httpAddr)
		if err != nil || len(a) != 5 {
			return false, fmt.Sprint(a, err)
		}
		for name, v := range a {
			if v.Status != "online" || (ids[name] != "" && ids[name] != v.AgentID) {
				return false, fmt.Sprintf("%s: %+v (agent id at the start: %s)", name, v, ids[name])
			}
		}
		return true, ""
	}
	waitFor(t, 30*time.Second, "a leader known to all orchestrators", func() (bool, string) {
		l, seen := leaderName()
		return l != "", seen
	})
	for _, o := range orchs {
		waitFor(t, 30*time.Second, "5 online records on "+o.name, func() (bool, string) { return intact(o) })
	}
	a, err := agentsOn(orchs[0].httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range a {
		ids[name] = v.AgentID
	}
	t.Logf("cluster up on %s after %s", rel.version, time.Since(start).Round(time.Millisecond))

	// Readers: capacity in the default mode (the leader's view), from the
	// orchestrators in rotation, without pause.
	rot := &rotation{in: append([]*orchSpec(nil), orchs...), inflight: map[*orchSpec]int{}}
	var reads, failedReads atomic.Int64
	var firstFailure atomic.Value
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	defer func() { cancel(); bg.Wait() }()
	for range 2 {
		bg.Go(func() {
			for ctx.Err() == nil {
				o := rot.pick()
				if o == nil {
					continue
				}
				var list []apitype.Capacity
				code, err := getJSON("https://"+o.httpAddr+"/agents/available-capacity?min_gpu_vram_gb=4", &list)
				rot.done(o)
				bad := err != nil || code != 200
				for _, c := range list {
					bad = bad || ids[c.Name] != c.AgentID
				}
				if bad {
					failedReads.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%s: code %d, err %v, %+v", o.name, code, err, list))
				} else {
					reads.Add(1)
				}
			}
		})
	}
	// The producer: one work item every 50 ms, each confirmed by the
	// broker before it counts as sent.
	var sentMu sync.Mutex
	var sent []string // guarded by sentMu
	results := &noLossResults{byID: map[string][]apitype.WorkResult{}}
	bg.Go(func() { results.run(ctx, broker.URL) })
	prod := &noLossProducer{url: broker.URL}
	defer prod.close()
	pctx, stopProducing := context.WithCancel(ctx)
	var prodWG sync.WaitGroup
	prodWG.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("up-%05d", i)
			body := fmt.Appendf(nil, `{"work_id":%q,"payload":{"i":%d}}`, id, i)
			if err := prod.publish(pctx, []noLossRequest{{workID: id, body: body}}); err != nil {
				return // stopped while publishing: not sent
			}
			sentMu.Lock()
			sent = append(sent, id)
			sentMu.Unlock()
		}
	})
	waitFor(t, 20*time.Second, "reads and work flowing", func() (bool, string) {
		return reads.Load() > 20 && results.distinct() > 5, fmt.Sprintf("%d reads, %d results", reads.Load(), results.distinct())
	})

	// Orchestrators: the followers, then the leader.
	lead, _ := leaderName()
	var order []*orchSpec
	for _, o := range orchs {
		if o.name != lead {
			order = append(order, o)
		}
	}
	for _, o := range orchs {
		if o.name == lead {
			order = append(order, o)
		}
	}
	for _, o := range order {
		began := time.Now()
		rot.remove(t, o)
		procs[o.name].signal(t, syscall.SIGTERM)
		if code := procs[o.name].waitExit(t, 30*time.Second); code != 0 {
			t.Fatalf("%s (%s) exited %d on SIGTERM", o.name, rel.version, code)
		}
		procs[o.name] = startBinary(t, newBin, o.name, o.argv(), o.env)
		waitFor(t, 60*time.Second, o.name+" back: ready, a voter among three, its replica intact", func() (bool, string) {
			if code, err := getJSON("https://"+o.httpAddr+"/readyz", nil); err != nil || code != 200 {
				return false, fmt.Sprintf("readyz %d %v", code, err)
			}
			var peers []apitype.Peer
			if code, err := getJSON("https://"+o.httpAddr+"/v1/operator/raft/peers?stale", &peers); err != nil || code != 200 {
				return false, fmt.Sprintf("peers %d %v", code, err)
			}
			voters := 0
			for _, p := range peers {
				if p.Voter {
					voters++
				}
			}
			if voters != 3 {
				return false, fmt.Sprintf("peers %+v", peers)
			}
			return intact(o)
		})
		rot.add(o)
		t.Logf("%s upgraded in %s (was leader: %v); %d reads so far, %d results", o.name,
			time.Since(began).Round(time.Millisecond), o.name == lead, reads.Load(), results.distinct())
	}
	// Desktops, one at a time.
	for _, s := range desks {
		began := time.Now()
		procs[s.name].signal(t, syscall.SIGTERM)
		if code := procs[s.name].waitExit(t, 30*time.Second); code != 0 {
			t.Fatalf("%s (%s) exited %d on SIGTERM", s.name, rel.version, code)
		}
		procs[s.name] = startBinary(t, newBin, s.name, s.argv(), s.env)
		for _, o := range orchs {
			waitFor(t, 30*time.Second, s.name+" online again on "+o.name, func() (bool, string) { return intact(o) })
		}
		t.Logf("%s upgraded in %s", s.name, time.Since(began).Round(time.Millisecond))
	}
	// Work keeps flowing on the upgraded cluster; then stop sending and
	// wait for every result.
	after := results.distinct()
	waitFor(t, 30*time.Second, "work on the upgraded cluster", func() (bool, string) {
		return results.distinct() > after+10, fmt.Sprint(results.distinct()-after, " results since")
	})
	stopProducing()
	prodWG.Wait()
	sentMu.Lock()
	ids0 := append([]string(nil), sent...)
	sentMu.Unlock()
	waitFor(t, 60*time.Second, "a result for every work item sent", func() (bool, string) {
		results.mu.Lock()
		defer results.mu.Unlock()
		var lost []string
		for _, id := range ids0 {
			if len(results.byID[id]) == 0 {
				lost = append(lost, id)
			}
		}
		if len(lost) > 5 {
			lost = append(lost[:5], fmt.Sprintf("… %d in all", len(lost)))
		}
		return len(lost) == 0, "no result yet for " + strings.Join(lost, ", ")
	})
	cancel()
	bg.Wait()

	results.mu.Lock()
	for _, id := range ids0 {
		for _, r := range results.byID[id] {
			if r.Status != "succeeded" {
				t.Errorf("work %s: %+v; want succeeded", id, r)
			}
		}
	}
	if len(results.bad) > 0 {
		t.Errorf("malformed results: %v", results.bad)
	}
	results.mu.Unlock()
	t.Logf("rolling upgrade %s → %s: %d capacity reads, %d failed; %d work items sent, all with results; total %s",
		rel.version, version, reads.Load(), failedReads.Load(), len(ids0), time.Since(start).Round(time.Millisecond))
	if n := failedReads.Load(); n != 0 {
		t.Errorf("%d capacity reads failed during the upgrade (first: %v); want none", n, firstFailure.Load())
	}
	for _, o := range orchs {
		if ok, why := intact(o); !ok {
			t.Errorf("registry on %s after the upgrade: %s", o.name, why)
		}
	}
}

// knownFlags returns a filter that keeps, of an agent's arguments, the
// flags that bin's `chiffon agent -help` lists (each with its value, when
// the next argument is not a flag), and drops the others.
func knownFlags(t *testing.T, bin string) func(argv []string) []string {
	t.Helper()
	out, errOut, _ := runCmd(bin, "agent", "-help")
	known := map[string]bool{}
	for _, line := range strings.Split(out+errOut, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "-") {
			known[strings.TrimLeft(f[0], "-")] = true
		}
	}
	if !known["node"] || !known["data-dir"] {
		t.Fatalf("%s agent -help lists no flags:\n%s%s", bin, out, errOut)
	}
	return func(argv []string) []string {
		var keep []string
		for i := 0; i < len(argv); i++ {
			a := argv[i]
			name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			takesNext := strings.HasPrefix(a, "-") && !hasValue && i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-")
			if strings.HasPrefix(a, "-") && !known[name] {
				if takesNext {
					i++
				}
				continue
			}
			keep = append(keep, a)
			if takesNext {
				keep = append(keep, argv[i+1])
				i++
			}
		}
		return keep
	}
}
