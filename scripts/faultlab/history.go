package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// ErrBadHistory is returned for a history file that cannot be parsed.
var ErrBadHistory = errors.New("bad history")

// Read is one registry read as the driver saw it: which orchestrator, in
// which consistency mode (default or consistent), what it answered (Value,
// a digest of the agent record; Modify, the record's modify_index; Index,
// the X-Chiffon-Index header) and when it was sent and answered (Unix
// nanoseconds). OK is false for a transport error, a timeout or a status
// other than 200; such a read has no effect on the register and is left
// out of the linearizability check.
type Read struct {
	Client int    `json:"client"`
	Node   string `json:"node"`
	Mode   string `json:"mode"`
	Value  string `json:"value,omitempty"`
	Modify uint64 `json:"modify,omitempty"`
	Index  uint64 `json:"index,omitempty"`
	Start  int64  `json:"start"`
	End    int64  `json:"end"`
	OK     bool   `json:"ok"`
	Err    string `json:"err,omitempty"`
}

// registerState is the model's state: the version (a raft index) of the
// register as the last linearized read saw it, and its value.
type registerState struct {
	Index uint64
	Value string
}

// registerModel is the sequential specification that default and
// consistent reads must be linearizable against.
//
// The register is the read agent's record in the raft-replicated registry.
// Its writes (the leader applying heartbeats) are not observed directly;
// what a read sees is the record and its modify_index, the raft index of
// the write that made it. The version never goes back in a linearization
// of the reads (a read linearized after another saw at least the writes
// that one saw), and one version has one value. The unobserved writes
// between two reads are accounted for by letting a read move the state to
// any later version with any value; a read of an older version than the
// state's is a stale read and has no legal step, and a read of the same
// version with another value is a corrupt one. So a default or consistent
// read that started after another had returned version v must return a
// version >= v.
//
// The same model, with every value empty, checks the X-Chiffon-Index
// header: the registry index the answering node had applied must not go
// back either. It is checked apart from the record because the header and
// the body are not read at the same instant (the header may be older than
// the body), so the two need not linearize in the same order.
var registerModel = porcupine.Model{
	Init: func() interface{} { return registerState{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s := state.(registerState)
		o := output.(registerState)
		switch {
		case o.Index > s.Index:
			return true, o
		case o.Index == s.Index:
			return o.Value == s.Value, s
		default:
			return false, s
		}
	},
	Equal: func(a, b interface{}) bool { return a.(registerState) == b.(registerState) },
	DescribeOperation: func(input, output interface{}) string {
		o := output.(registerState)
		return fmt.Sprintf("read() -> version %d %.8s", o.Index, o.Value)
	},
}

// checkReads checks the successful reads against registerModel, the
// records (Modify, Value) and, with headers, the X-Chiffon-Index headers
// apart, and says "yes", "unknown" (porcupine ran out of time) or what is
// not linearizable.
func checkReads(reads []Read, headers bool, timeout time.Duration) string {
	var records, hdrs []porcupine.Operation
	for _, r := range reads {
		if !r.OK {
			continue
		}
		records = append(records, porcupine.Operation{ClientId: r.Client, Call: r.Start, Return: r.End,
			Output: registerState{Index: r.Modify, Value: r.Value}})
		if headers {
			hdrs = append(hdrs, porcupine.Operation{ClientId: r.Client, Call: r.Start, Return: r.End,
				Output: registerState{Index: r.Index}})
		}
	}
	var bad []string
	for _, c := range []struct {
		name string
		ops  []porcupine.Operation
	}{{"records", records}, {"index-header", hdrs}} {
		switch res, _ := porcupine.CheckOperationsVerbose(registerModel, c.ops, timeout); res {
		case porcupine.Unknown:
			return "unknown"
		case porcupine.Illegal:
			bad = append(bad, c.name)
		}
	}
	if len(bad) == 0 {
		return "yes"
	}
	return "no(" + strings.Join(bad, ",") + ")"
}

// headerBehind counts reads whose X-Chiffon-Index is lower than the
// modify_index of the record they carry: a header read before the body.
func headerBehind(reads []Read) int {
	n := 0
	for _, r := range reads {
		if r.OK && r.Index < r.Modify {
			n++
		}
	}
	return n
}

// Run is one start of a work handler, as the handler appended it to the
// runs file: "work_id attempt start_ns end_ns node".
type Run struct {
	WorkID  string
	Attempt int
	Start   int64
	End     int64
	Node    string
}

// Result is one result message from the result queue, as the driver got
// it: the decoded fields that matter and when it arrived.
type Result struct {
	WorkID   string `json:"work_id"`
	Status   string `json:"status"`
	AgentID  string `json:"agent_id"`
	Attempts int    `json:"attempts"`
	At       int64  `json:"at"`
}

// Item is one submitted work request: its ID and when the broker
// confirmed it (Unix ns). items.txt has one per line, "work_id submit_ns".
type Item struct {
	ID string
	At int64
}

// WorkReport is what checkWork found.
type WorkReport struct {
	Items    int // submitted
	Results  int // items with a result
	Lost     int // submitted, no result
	Failed   int // result with a status other than succeeded
	RunTwice int // items whose handler started more than once
	// DupAttempt counts attempts (work_id, attempt) that started more than
	// once: never valid, whatever the fault.
	DupAttempt int
	// Zombie counts starts of an attempt after the item had a result or
	// after a later attempt of it had started: a superseded attempt run.
	Zombie int
	// MaxItemMS is the longest time from submission to result.
	MaxItemMS int
	// Slow counts items whose result took longer than the limit given.
	Slow int
	// Examples names a few offending items for the log.
	Examples []string
}

// checkWork checks "each valid item ran once per fence, every result
// published, none lost": every submitted item has a result; no attempt
// started twice; no attempt started after its item's result was
// published or after a later attempt had started (the fence); and counts
// the items that ran more than once (allowed only where at-least-once
// delivery says so: a partition or a kill, never a freeze). An item whose
// result took longer than slow (if > 0) counts as Slow.
func checkWork(items []Item, runs []Run, results []Result, slow time.Duration) WorkReport {
	rep := WorkReport{Items: len(items)}
	first := map[string]Result{} // earliest result per item
	for _, r := range results {
		if f, ok := first[r.WorkID]; !ok || r.At < f.At {
			first[r.WorkID] = r
		}
	}
	byItem := map[string][]Run{}
	for _, r := range runs {
		byItem[r.WorkID] = append(byItem[r.WorkID], r)
	}
	note := func(format string, a ...any) {
		if len(rep.Examples) < 5 {
			rep.Examples = append(rep.Examples, fmt.Sprintf(format, a...))
		}
	}
	for _, it := range items {
		id := it.ID
		res, ok := first[id]
		if !ok {
			rep.Lost++
			note("%s: no result", id)
		} else {
			rep.Results++
			took := time.Duration(res.At - it.At)
			rep.MaxItemMS = max(rep.MaxItemMS, int(took/time.Millisecond))
			if slow > 0 && took > slow {
				rep.Slow++
				note("%s: result after %v (on %s)", id, took.Round(time.Millisecond), res.AgentID)
			}
			if res.Status != "succeeded" {
				rep.Failed++
				note("%s: %s", id, res.Status)
			}
		}
		rs := byItem[id]
		sort.Slice(rs, func(i, j int) bool { return rs[i].Start < rs[j].Start })
		if len(rs) > 1 {
			rep.RunTwice++
		}
		seen := map[int]bool{}
		maxAttempt := 0
		for _, r := range rs {
			if seen[r.Attempt] {
				rep.DupAttempt++
				note("%s: attempt %d started twice", id, r.Attempt)
			}
			seen[r.Attempt] = true
			switch {
			case ok && r.Start > res.At:
				rep.Zombie++
				note("%s: attempt %d on %s started %v after the result was published", id, r.Attempt, r.Node,
					time.Duration(r.Start-res.At).Round(time.Millisecond))
			case r.Attempt < maxAttempt:
				rep.Zombie++
				note("%s: attempt %d on %s started after attempt %d", id, r.Attempt, r.Node, maxAttempt)
			}
			maxAttempt = max(maxAttempt, r.Attempt)
		}
	}
	return rep
}

// readJSONLines decodes one JSON value per line of path into a slice. A
// missing file is an empty history.
func readJSONLines[T any](path string) ([]T, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return nil, fmt.Errorf("%w: %s line %d: %v", ErrBadHistory, path, n, err)
		}
		out = append(out, v)
	}
	return out, sc.Err()
}

// readItems parses items.txt. A missing file is no items.
func readItems(path string) ([]Item, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Item
	for n, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		it := Item{ID: f[0]}
		if len(f) > 1 {
			if it.At, err = strconv.ParseInt(f[1], 10, 64); err != nil {
				return nil, fmt.Errorf("%w: %s line %d: %v", ErrBadHistory, path, n+1, err)
			}
		}
		out = append(out, it)
	}
	return out, nil
}

// readRuns parses the handlers' runs file. A missing file is no runs.
func readRuns(path string) ([]Run, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Run
	for n, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 4 {
			return nil, fmt.Errorf("%w: %s line %d: want \"work_id attempt start end [node]\"", ErrBadHistory, path, n+1)
		}
		r := Run{WorkID: f[0]}
		var e1, e2, e3 error
		r.Attempt, e1 = strconv.Atoi(f[1])
		r.Start, e2 = strconv.ParseInt(f[2], 10, 64)
		r.End, e3 = strconv.ParseInt(f[3], 10, 64)
		if err := errors.Join(e1, e2, e3); err != nil {
			return nil, fmt.Errorf("%w: %s line %d: %v", ErrBadHistory, path, n+1, err)
		}
		if len(f) > 4 {
			r.Node = f[4]
		}
		out = append(out, r)
	}
	return out, nil
}
