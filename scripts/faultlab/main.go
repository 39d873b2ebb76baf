// Command faultlab drives and checks one scenario of the fault lab
// (scripts/faultlab.sh, docs/RELIABILITY.md). It has two modes:
//
//	faultlab drive -dir DIR -orchs A,B,C [-read-nodes A,B] [-read-agent NAME
//	    -metrics-file PATH] [-amqp-url URL -work-every 300ms] -duration 40s
//	    while the script injects its fault: read one agent's capacity
//	    from each read node (default and ?consistent in turn) and record
//	    every read (node, value, X-Chiffon-Index, start, end) in
//	    DIR/reads.jsonl; rewrite the agent's metrics file every 500 ms so
//	    the record changes; record each orchestrator's raft term and
//	    leader, and every agent's status, in DIR/watch.jsonl; submit a
//	    work request every -work-every to chiffon.work and record the
//	    items (DIR/items.txt) and the results from its reply queue
//	    (DIR/results.jsonl), then wait up to -drain for the last results.
//
//	faultlab check -dir DIR [limits]
//	    check the histories and print one verdict line, "pass ..." or
//	    "FAIL (reasons) ...", with the figures: elections, failed/total
//	    reads, slowest read, time to a new leader after the cut (DIR/cut,
//	    Unix ns, written by the script), false suspect and offline of the
//	    agents that had to stay online, items lost, items run twice.
//	    Reads must be linearizable (porcupine, see registerModel); work
//	    must pass checkWork with the runs the handlers appended to
//	    DIR/runs.txt ("work_id attempt start_ns end_ns node"). Exits 1 on
//	    FAIL.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: faultlab drive|check [flags] (see the package comment)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "drive":
		err = driveMain(os.Args[2:])
	case "check":
		var ok bool
		ok, err = checkMain(os.Args[2:], os.Stdout)
		if err == nil && !ok {
			os.Exit(1)
		}
	default:
		err = fmt.Errorf("unknown mode %q: want drive or check", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "faultlab:", err)
		os.Exit(2)
	}
}

func list(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func driveMain(args []string) error {
	fs := flag.NewFlagSet("drive", flag.ExitOnError)
	var cfg driveConfig
	var orchs, readNodes string
	fs.StringVar(&cfg.Dir, "dir", "", "history directory")
	fs.StringVar(&orchs, "orchs", "", "orchestrators' HTTP addresses, comma-separated")
	fs.StringVar(&readNodes, "read-nodes", "", "orchestrators to read from (default: -orchs)")
	fs.StringVar(&cfg.ReadAgent, "read-agent", "", "name of the agent whose capacity is read (empty: no reads)")
	fs.StringVar(&cfg.MetricsFile, "metrics-file", "", "the read agent's metrics file, rewritten every 500 ms")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long to drive")
	fs.DurationVar(&cfg.ReadTimeout, "read-timeout", 5*time.Second, "a read slower than this failed")
	fs.StringVar(&cfg.AMQPURL, "amqp-url", "", "broker URL (empty: no work)")
	fs.DurationVar(&cfg.WorkEvery, "work-every", 300*time.Millisecond, "submit a work request this often")
	fs.DurationVar(&cfg.Drain, "drain", 60*time.Second, "wait at most this long for the last results")
	var caFile, certFile, keyFile string
	fs.StringVar(&caFile, "tls-ca", "", "the cluster CA (PEM): read the orchestrators over HTTPS (empty: plain HTTP, for -insecure clusters)")
	fs.StringVar(&certFile, "tls-cert", "", "the driver's client certificate (PEM), with -tls-ca")
	fs.StringVar(&keyFile, "tls-key", "", "the key of -tls-cert (PEM)")
	fs.Parse(args)
	if cfg.Dir == "" || orchs == "" {
		return fmt.Errorf("drive needs -dir and -orchs")
	}
	if caFile != "" {
		if err := useTLS(caFile, certFile, keyFile); err != nil {
			return err
		}
	}
	cfg.Orchs = list(orchs)
	cfg.ReadNodes = cfg.Orchs
	if readNodes != "" {
		cfg.ReadNodes = list(readNodes)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return drive(ctx, cfg)
}

// limits are what a scenario tolerates; a negative number is no limit.
type limits struct {
	maxFailedReads int
	maxReadMS      int
	maxElections   int
	maxNewLeaderMS int
	maxFalse       int
	maxItemMS      int
	allowRerun     bool
	indexHeader    bool
	expectOnline   []string
	cutNode        string
	// expectUnreachable must be shown "reachable": false while online
	// after the cut (the leader could not reach it for
	// -work-unreachable-after).
	expectUnreachable string
}

// figures are what check measured.
type figures struct {
	elections          int
	reads, failedReads int
	maxReadMS          int
	newLeaderMS        int // -1: no cut or no new leader seen
	falseSuspect       int
	falseOffline       int
	unreachableMS      int // cut to expectUnreachable shown unreachable while online; -1: never
	linearizable       string
	headerBehind       int // reads whose X-Chiffon-Index is below their record's modify_index
	work               WorkReport
	readFailures       []string
	falseNodes         []string
}

func checkMain(args []string, stdout *os.File) (bool, error) {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	var dir, online string
	var lim limits
	fs.StringVar(&dir, "dir", "", "history directory")
	fs.IntVar(&lim.maxFailedReads, "max-failed-reads", 0, "failed reads tolerated (-1: any)")
	fs.IntVar(&lim.maxReadMS, "max-read-ms", -1, "slowest successful read tolerated, ms (-1: any)")
	fs.IntVar(&lim.maxElections, "max-elections", -1, "elections tolerated (-1: any)")
	fs.IntVar(&lim.maxNewLeaderMS, "max-new-leader-ms", -1, "time from the cut to a new leader tolerated, ms (-1: any)")
	fs.IntVar(&lim.maxFalse, "max-false", 0, "false suspect+offline transitions tolerated (-1: any)")
	fs.IntVar(&lim.maxItemMS, "max-item-ms", -1, "longest time from submission to result tolerated, ms (-1: any)")
	fs.BoolVar(&lim.allowRerun, "allow-rerun", false, "an item may run twice (at-least-once: partitions, kills)")
	fs.BoolVar(&lim.indexHeader, "check-index-header", true, "check X-Chiffon-Index for linearizability too (false: records only)")
	fs.StringVar(&online, "expect-online", "", "agents that must stay online throughout, comma-separated")
	fs.StringVar(&lim.cutNode, "cut-node", "", "the orchestrator cut off (its own view of the leader is ignored)")
	fs.StringVar(&lim.expectUnreachable, "expect-unreachable", "", "an agent that must be shown online and \"reachable\": false after the cut")
	fs.Parse(args)
	if dir == "" {
		return false, fmt.Errorf("check needs -dir")
	}
	lim.expectOnline = list(online)
	reads, err := readJSONLines[Read](filepath.Join(dir, "reads.jsonl"))
	if err != nil {
		return false, err
	}
	watch, err := readJSONLines[Watch](filepath.Join(dir, "watch.jsonl"))
	if err != nil {
		return false, err
	}
	// Each orchestrator is watched by a goroutine of its own: put them in
	// time order.
	slices.SortStableFunc(watch, func(a, b Watch) int { return cmp.Compare(a.At, b.At) })
	results, err := readJSONLines[Result](filepath.Join(dir, "results.jsonl"))
	if err != nil {
		return false, err
	}
	runs, err := readRuns(filepath.Join(dir, "runs.txt"))
	if err != nil {
		return false, err
	}
	items, err := readItems(filepath.Join(dir, "items.txt"))
	if err != nil {
		return false, err
	}
	var cut int64
	if b, err := os.ReadFile(filepath.Join(dir, "cut")); err == nil {
		cut, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	f := measure(reads, watch, items, runs, results, cut, lim)
	reasons := verdict(f, lim, len(items) > 0)
	line := fmt.Sprintf("elections=%d reads_failed=%d/%d max_read_ms=%d new_leader_ms=%d false_suspect=%d false_offline=%d linearizable=%s index_header_behind_body=%d items=%d lost=%d run_twice=%d zombie_starts=%d dup_attempts=%d failed_items=%d max_item_ms=%d",
		f.elections, f.failedReads, f.reads, f.maxReadMS, f.newLeaderMS, f.falseSuspect, f.falseOffline, f.linearizable, f.headerBehind,
		f.work.Items, f.work.Lost, f.work.RunTwice, f.work.Zombie, f.work.DupAttempt, f.work.Failed, f.work.MaxItemMS)
	if lim.expectUnreachable != "" {
		line += fmt.Sprintf(" unreachable_ms=%d", f.unreachableMS)
	}
	if len(reasons) == 0 {
		fmt.Fprintln(stdout, "pass", line)
	} else {
		fmt.Fprintf(stdout, "FAIL (%s) %s\n", strings.Join(reasons, "; "), line)
	}
	for _, e := range f.work.Examples {
		fmt.Fprintln(stdout, "  work:", e)
	}
	if lim.maxFailedReads < 0 || f.failedReads <= lim.maxFailedReads {
		f.readFailures = nil // expected (a node killed or cut): not worth a line each
	}
	for _, e := range f.readFailures {
		fmt.Fprintln(stdout, "  read:", e)
	}
	for _, e := range f.falseNodes {
		fmt.Fprintln(stdout, "  status:", e)
	}
	return len(reasons) == 0, nil
}

// measure computes the figures from the histories.
func measure(reads []Read, watch []Watch, items []Item, runs []Run, results []Result, cut int64, lim limits) figures {
	f := figures{newLeaderMS: -1, linearizable: "yes"}
	for _, r := range reads {
		f.reads++
		if !r.OK {
			f.failedReads++
			if len(f.readFailures) < 5 {
				f.readFailures = append(f.readFailures, fmt.Sprintf("%s %s at %s after %v: %s", r.Node, r.Mode,
					relTime(r.Start, cut), time.Duration(r.End-r.Start).Round(time.Millisecond), r.Err))
			}
			continue
		}
		f.maxReadMS = max(f.maxReadMS, int((r.End-r.Start)/int64(time.Millisecond)))
	}
	f.linearizable = checkReads(reads, lim.indexHeader, time.Minute)
	f.headerBehind = headerBehind(reads)

	// Elections: how far the highest term any orchestrator reported rose.
	// The starting term is the highest in the first second of watching.
	var first, last uint64
	var t0 int64
	for _, w := range watch {
		if w.Agent != "" || w.Term == 0 {
			continue
		}
		if t0 == 0 {
			t0 = w.At
		}
		if w.At < t0+int64(time.Second) {
			first = max(first, w.Term)
		}
		last = max(last, w.Term)
	}
	if first > 0 {
		f.elections = int(last - first)
	}

	// Time to a new leader: the leader known just before the cut, then
	// the first observation after it, from a node other than the cut one,
	// of another leader.
	if cut > 0 {
		old := ""
		for _, w := range watch {
			if w.Agent == "" && w.At <= cut && w.Leader != "" {
				old = w.Leader
			}
		}
		for _, w := range watch {
			if w.Agent == "" && w.At > cut && w.Node != lim.cutNode && w.Leader != "" && w.Leader != old {
				f.newLeaderMS = int((w.At - cut) / int64(time.Millisecond))
				break
			}
		}
	}

	// False suspect/offline: agents that had to stay online and, once
	// seen online, were reported otherwise.
	seenOnline := map[string]bool{}
	last2 := map[string]string{}
	for _, w := range watch {
		if w.Agent == "" || !slices.Contains(lim.expectOnline, w.Agent) {
			continue
		}
		if w.Status == "online" {
			seenOnline[w.Agent] = true
		}
		if seenOnline[w.Agent] && w.Status != last2[w.Agent] {
			switch w.Status {
			case "suspect":
				f.falseSuspect++
				f.falseNodes = append(f.falseNodes, fmt.Sprintf("%s suspect at %s", w.Agent, relTime(w.At, cut)))
			case "offline":
				f.falseOffline++
				f.falseNodes = append(f.falseNodes, fmt.Sprintf("%s offline at %s", w.Agent, relTime(w.At, cut)))
			}
		}
		last2[w.Agent] = w.Status
	}
	// Shown unreachable: the first observation after the cut of the
	// expected agent online with "reachable": false.
	f.unreachableMS = -1
	for _, w := range watch {
		if lim.expectUnreachable != "" && w.Agent == lim.expectUnreachable && w.At > cut && w.Status == "online" && w.Unreachable {
			f.unreachableMS = int((w.At - cut) / int64(time.Millisecond))
			break
		}
	}
	slow := time.Duration(0)
	if lim.maxItemMS >= 0 {
		slow = time.Duration(lim.maxItemMS) * time.Millisecond
	}
	f.work = checkWork(items, runs, results, slow)
	return f
}

// relTime prints t relative to the cut when there is one.
func relTime(t, cut int64) string {
	if cut == 0 {
		return time.Unix(0, t).UTC().Format("15:04:05.000")
	}
	return fmt.Sprintf("cut%+.2fs", float64(t-cut)/1e9)
}

// verdict lists why f fails lim; empty is a pass.
func verdict(f figures, lim limits, work bool) []string {
	var out []string
	if lim.maxFailedReads >= 0 && f.failedReads > lim.maxFailedReads {
		out = append(out, fmt.Sprintf("%d failed reads", f.failedReads))
	}
	if f.linearizable != "yes" {
		out = append(out, "reads not linearizable: "+f.linearizable)
	}
	if lim.maxReadMS >= 0 && f.maxReadMS > lim.maxReadMS {
		out = append(out, fmt.Sprintf("a read took %d ms > %d", f.maxReadMS, lim.maxReadMS))
	}
	if lim.maxElections >= 0 && f.elections > lim.maxElections {
		out = append(out, fmt.Sprintf("%d elections > %d", f.elections, lim.maxElections))
	}
	if lim.maxNewLeaderMS >= 0 && (f.newLeaderMS < 0 || f.newLeaderMS > lim.maxNewLeaderMS) {
		out = append(out, fmt.Sprintf("new leader after %d ms (limit %d)", f.newLeaderMS, lim.maxNewLeaderMS))
	}
	if lim.maxFalse >= 0 && f.falseSuspect+f.falseOffline > lim.maxFalse {
		out = append(out, fmt.Sprintf("%d false suspect/offline", f.falseSuspect+f.falseOffline))
	}
	if lim.expectUnreachable != "" && f.unreachableMS < 0 {
		out = append(out, lim.expectUnreachable+" never shown online and unreachable")
	}
	if work {
		w := f.work
		if w.Lost > 0 {
			out = append(out, fmt.Sprintf("%d items lost", w.Lost))
		}
		if w.Failed > 0 {
			out = append(out, fmt.Sprintf("%d items failed", w.Failed))
		}
		if w.Zombie > 0 {
			out = append(out, fmt.Sprintf("%d superseded attempts started", w.Zombie))
		}
		if w.DupAttempt > 0 {
			out = append(out, fmt.Sprintf("%d attempts started twice", w.DupAttempt))
		}
		if w.Slow > 0 {
			out = append(out, fmt.Sprintf("%d items took longer than %d ms", w.Slow, lim.maxItemMS))
		}
		if !lim.allowRerun && w.RunTwice > 0 {
			out = append(out, fmt.Sprintf("%d items run twice", w.RunTwice))
		}
	}
	return out
}
