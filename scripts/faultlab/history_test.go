package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

// ms builds a read from start to end milliseconds that saw (index, value).
func rd(client int, start, end int64, index uint64, value string) Read {
	return Read{Client: client, Start: start * 1e6, End: end * 1e6, Modify: index, Index: index, Value: value, OK: true}
}

func TestCheckReads_Linearizable(t *testing.T) {
	tests := []struct {
		name  string
		reads []Read
		want  string
	}{
		{"sequential, index rising", []Read{rd(0, 0, 10, 5, "a"), rd(1, 20, 30, 7, "b"), rd(0, 40, 50, 7, "b")}, "yes"},
		{"concurrent reads may see either order", []Read{rd(0, 0, 30, 7, "b"), rd(1, 10, 20, 5, "a")}, "yes"},
		{"a failed read does not count", []Read{rd(0, 0, 10, 7, "b"), {Client: 1, Start: 20e6, End: 30e6, OK: false}, rd(1, 40, 50, 7, "b")}, "yes"},
		{"stale read after a newer one returned", []Read{rd(0, 0, 10, 7, "b"), rd(1, 20, 30, 5, "a")}, "no(records,index-header)"},
		{"same index, two values", []Read{rd(0, 0, 10, 7, "b"), rd(1, 20, 30, 7, "c")}, "no(records)"},
		{"stale read on the same client", []Read{rd(0, 0, 10, 9, "x"), rd(0, 20, 30, 8, "y"), rd(1, 25, 40, 9, "x")}, "no(records,index-header)"},
	}
	// The header may be read before the body: older than the record, but
	// never going back.
	behind := rd(1, 20, 30, 7, "b")
	behind.Index = 6
	tests = append(tests, struct {
		name  string
		reads []Read
		want  string
	}{"index header behind its body", []Read{rd(0, 0, 10, 6, "a"), behind}, "yes"})
	backwards := rd(1, 20, 30, 7, "b")
	backwards.Index = 5
	tests = append(tests, struct {
		name  string
		reads []Read
		want  string
	}{"index header going back", []Read{rd(0, 0, 10, 6, "a"), backwards}, "no(index-header)"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkReads(tt.reads, true, 10*time.Second); got != tt.want {
				t.Errorf("linearizable = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestCheckReads_RecordsOnly: without the header check, a header going
// back is not a failure, a stale record still is.
func TestCheckReads_RecordsOnly(t *testing.T) {
	back := rd(1, 20, 30, 7, "b")
	back.Index = 5
	if got := checkReads([]Read{rd(0, 0, 10, 6, "a"), back}, false, 10*time.Second); got != "yes" {
		t.Errorf("header going back, records only: %s, want yes", got)
	}
	if got := checkReads([]Read{rd(0, 0, 10, 7, "b"), rd(1, 20, 30, 5, "a")}, false, 10*time.Second); got != "no(records)" {
		t.Errorf("stale record, records only: %s, want no(records)", got)
	}
}

func TestCheckWork(t *testing.T) {
	items := []Item{{"w1", 0}, {"w2", 0}}
	ok := []Result{{WorkID: "w1", Status: "succeeded", At: 100}, {WorkID: "w2", Status: "succeeded", At: 100}}
	tests := []struct {
		name    string
		runs    []Run
		results []Result
		check   func(WorkReport) bool
	}{
		{"each ran once, all published", []Run{{"w1", 1, 10, 20, "d1"}, {"w2", 1, 10, 20, "d2"}}, ok,
			func(r WorkReport) bool {
				return r.Lost+r.RunTwice+r.Zombie+r.DupAttempt+r.Failed == 0 && r.Results == 2
			}},
		{"a lost item", []Run{{"w1", 1, 10, 20, "d1"}}, ok[:1],
			func(r WorkReport) bool { return r.Lost == 1 }},
		{"the same attempt ran twice", []Run{{"w1", 1, 10, 20, "d1"}, {"w1", 1, 30, 40, "d1"}, {"w2", 1, 10, 20, "d2"}}, ok,
			func(r WorkReport) bool { return r.DupAttempt == 1 && r.RunTwice == 1 }},
		{"re-placed after a partition: run twice, not a zombie", []Run{{"w1", 1, 10, 90, "d1"}, {"w1", 2, 50, 60, "d2"}, {"w2", 1, 10, 20, "d2"}}, ok,
			func(r WorkReport) bool { return r.RunTwice == 1 && r.Zombie == 0 && r.DupAttempt == 0 }},
		{"frozen desktop starts attempt 1 after the result", []Run{{"w1", 2, 50, 60, "d2"}, {"w1", 1, 117, 130, "d1"}, {"w2", 1, 10, 20, "d2"}}, ok,
			func(r WorkReport) bool { return r.Zombie == 1 && r.RunTwice == 1 }},
		{"superseded attempt starts after the later one", []Run{{"w1", 2, 50, 60, "d2"}, {"w1", 1, 55, 70, "d1"}, {"w2", 1, 10, 20, "d2"}}, ok,
			func(r WorkReport) bool { return r.Zombie == 1 }},
		{"a failed item", []Run{{"w1", 1, 10, 20, "d1"}, {"w2", 1, 10, 20, "d2"}}, []Result{ok[0], {WorkID: "w2", Status: "failed", At: 100}},
			func(r WorkReport) bool { return r.Failed == 1 && r.Lost == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := checkWork(items, tt.runs, tt.results, 0); !tt.check(r) {
				t.Errorf("report %+v", r)
			}
		})
	}
}

// TestCheck_Verdict runs check on history files as the driver and the
// handlers write them: a clean history passes, a double run fails.
func TestCheck_Verdict(t *testing.T) {
	write := func(dir, name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(runs string) string {
		dir := t.TempDir()
		write(dir, "reads.jsonl", `{"client":0,"node":"a","mode":"default","value":"v1","modify":5,"index":5,"start":1000,"end":2000,"ok":true}
{"client":1,"node":"b","mode":"consistent","value":"v2","modify":6,"index":6,"start":3000,"end":4000,"ok":true}
`)
		write(dir, "items.txt", "w1 50\n")
		write(dir, "results.jsonl", `{"work_id":"w1","status":"succeeded","at":500}`+"\n")
		write(dir, "runs.txt", runs)
		return dir
	}
	for _, tt := range []struct {
		name, runs string
		pass       bool
		want       string
	}{
		{"clean", "w1 1 100 200 d1\n", true, "pass elections=0 reads_failed=0/2"},
		{"double run", "w1 1 100 200 d1\nw1 2 300 400 d2\n", false, "items run twice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := os.CreateTemp(t.TempDir(), "out")
			if err != nil {
				t.Fatal(err)
			}
			pass, err := checkMain([]string{"-dir", mk(tt.runs)}, out)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(out.Name())
			if pass != tt.pass || !strings.Contains(string(b), tt.want) {
				t.Errorf("pass = %v, output %q; want pass = %v and %q", pass, b, tt.pass, tt.want)
			}
		})
	}
}

func TestCheckWork_Slow(t *testing.T) {
	items := []Item{{"w1", 0}, {"w2", 0}}
	res := []Result{{WorkID: "w1", Status: "succeeded", At: int64(2 * time.Second)}, {WorkID: "w2", Status: "succeeded", At: int64(31 * time.Second)}}
	r := checkWork(items, nil, res, 10*time.Second)
	if r.Slow != 1 || r.MaxItemMS != 31000 {
		t.Errorf("report %+v, want 1 slow item and max 31000 ms", r)
	}
}

func TestMeasure_Unreachable(t *testing.T) {
	lim := limits{maxFailedReads: -1, maxReadMS: -1, maxElections: -1, maxNewLeaderMS: -1, maxFalse: -1, maxItemMS: -1, expectUnreachable: "d2"}
	before := Watch{At: 900, Agent: "d2", Status: "online", Unreachable: true} // before the cut: not this fault's
	offline := Watch{At: 1500, Agent: "d2", Status: "offline", Unreachable: true}
	shown := Watch{At: 1000 + 8e6, Agent: "d2", Status: "online", Unreachable: true}
	for _, tt := range []struct {
		name  string
		watch []Watch
		ms    int
	}{
		{"shown online and unreachable", []Watch{before, {At: 1100, Agent: "d2", Status: "online"}, offline, shown}, 8},
		{"never", []Watch{before, offline, {At: 2000, Agent: "d2", Status: "online"}}, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := measure(nil, tt.watch, nil, nil, nil, 1000, lim)
			reasons := verdict(f, lim, false)
			if f.unreachableMS != tt.ms || (tt.ms < 0) != (len(reasons) > 0) {
				t.Errorf("unreachableMS = %d, reasons %q; want %d", f.unreachableMS, reasons, tt.ms)
			}
		})
	}
}

// TestRecordValue: two answers of one record version that differ only in
// what the answering orchestrator derives from its clock are the same
// value; a change of the registry's state is another.
func TestRecordValue(t *testing.T) {
	age1, age2 := 1.5, 7.25
	a := apitype.Agent{AgentID: "a", Status: "online", ModifyIndex: 9, SampleAgeS: &age1, FlapScore: 2}
	b := a
	b.SampleAgeS, b.FlapScore = &age2, 1.1
	if recordValue(a) != recordValue(b) {
		t.Error("sample_age_s and the decayed flap_score changed the value")
	}
	c := a
	c.Status = "suspect"
	if recordValue(a) == recordValue(c) {
		t.Error("a status change did not change the value")
	}
}
