package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSim_ReportKeys runs a tiny fleet and checks that the printed report
// and the -report file carry the keys.
func TestSim_ReportKeys(t *testing.T) {
	file := filepath.Join(t.TempDir(), "report.json")
	var out, errb bytes.Buffer
	code := run([]string{"sim", "-desktops", "5", "-duration", "20s", "-time-scale", "10", "-kill", "1",
		"-seed", "7", "-loss", "0.01", "-latency", "2ms", "-report", file}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s", code, errb.String(), out.String())
	}
	for _, want := range []string{"killed", "online again after their silence", "tag to registry", "raft", "query", "simulator"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed report lacks %q:\n%s", want, out.String())
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"desktops", "time_scale", "killed", "offline_after_s", "suspect_after_s", "false_suspect",
		"false_offline", "raft_entries_per_s", "tag_to_registry_p50_s", "tag_to_registry_p99_s", "query_p50_ms",
		"query_p99_ms", "leader_cpu_pct", "leader_rss_mib", "elections", "sim_stalls", "sim_max_stall_wall_s"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("report has no %q", k)
		}
	}
	if rep["desktops"] != 5.0 || rep["time_scale"] != 10.0 || rep["killed"] != 1.0 || rep["seed"] != 7.0 {
		t.Errorf("report says desktops %v, time_scale %v, killed %v, seed %v; want 5, 10, 1, 7",
			rep["desktops"], rep["time_scale"], rep["killed"], rep["seed"])
	}
}

func TestSim_BadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"sim", "-loss", "1.5"},
		{"sim", "-desktops", "2", "-kill", "3"},
		{"sim", "-time-scale", "fast"},
		{"sim", "-raft-slack", "0.5"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2; stderr %s", args, code, errb.String())
		}
		if !strings.Contains(errb.String(), "chiffon sim:") {
			t.Errorf("%q: stderr %q does not name the command", args, errb.String())
		}
	}
}

// TestSimOrchestrator_HiddenAndChecked: sim-orchestrator is not in the
// command list (it is the simulator's, not an operator's), and refuses a
// bad scale or slack with exit 2 before starting anything.
func TestSimOrchestrator_HiddenAndChecked(t *testing.T) {
	var out, errb bytes.Buffer
	run([]string{"-h"}, &out, &errb)
	if help := out.String() + errb.String(); !strings.Contains(help, "agent") || strings.Contains(help, "sim-orchestrator") {
		t.Errorf("chiffon -h lists sim-orchestrator (or nothing):\n%s", help)
	}
	for _, args := range [][]string{{"-time-scale", "0"}, {"-time-scale", "-1"}, {"-raft-slack", "0.5"}, {"-time-scale", "x"}} {
		out.Reset()
		errb.Reset()
		a := append([]string{"sim-orchestrator"}, append(args, "--", "-role", "orchestrator")...)
		if code := run(a, &out, &errb); code != 2 || !strings.Contains(errb.String(), args[0]) {
			t.Errorf("%q: exit %d, stderr %q; want 2 naming %s", a, code, errb.String(), args[0])
		}
	}
	// The agent's own flags are checked as the agent checks them.
	errb.Reset()
	if code := run([]string{"sim-orchestrator", "-time-scale", "4", "--", "-role", "nonsense"}, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "nonsense") {
		t.Errorf("a bad agent flag: exit %d, stderr %q; want 2 naming it", code, errb.String())
	}
}
