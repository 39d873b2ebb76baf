package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/api"
	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// fakeLeader is a one-node raft that always leads, for CLI tests.
type fakeLeader struct {
	mu      sync.Mutex
	servers []consensus.Server // guarded by mu
}

func (f *fakeLeader) IsLeader() bool           { return true }
func (f *fakeLeader) Leader() (string, string) { return "leader-1", "127.0.0.1:8300" }
func (f *fakeLeader) VerifyLeader() error      { return nil }
func (f *fakeLeader) LastContact() time.Time   { return time.Now() }
func (f *fakeLeader) ID() string               { return "leader-1" }
func (f *fakeLeader) Stats() map[string]string { return map[string]string{"state": "Leader"} }
func (f *fakeLeader) Servers() ([]consensus.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]consensus.Server(nil), f.servers...), nil
}
func (f *fakeLeader) remove(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, s := range f.servers {
		if s.ID == id {
			f.servers = append(f.servers[:i], f.servers[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("no server %s", id)
}

var _ api.Raft = (*fakeLeader)(nil)

func testAgentID(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i) }

// startTestAPI serves a registry of four agents and returns its address.
func startTestAPI(t *testing.T, token string) string {
	t.Helper()
	fsm := consensus.NewFSM()
	mk := func(i int, status consensus.Status, vram, cores float64, gpu string) consensus.Record {
		m := consensus.ResourceMetrics{CPUCoresPhysical: 16, CPUCoresAvailable: cores, MemoryAvailableGB: 32, GPUType: gpu}
		if gpu != "none" {
			m.GPUCount, m.GPUVRAMTotalGB, m.GPUVRAMAvailableGB, m.GPUVRAMMaxFreeGB = 1, 24, vram, vram
			m.GPUs = []consensus.GPU{{Index: 0, Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: vram}}
		}
		r := consensus.Record{AgentID: testAgentID(i), Name: fmt.Sprintf("desk-%d", i), Roles: []string{"desktop"},
			Status: status, Metrics: m, LastHeartbeatAt: time.Now().Add(-5 * time.Second)}
		if i != 4 { // desk-4 does not say when it sampled (an older desktop)
			r.SampledAt = time.Now().Add(-7 * time.Second)
		}
		return r
	}
	withWork := mk(1, consensus.StatusOnline, 20, 8, "nvidia")
	withWork.WorkSlots, withWork.WorkAddr = 2, "127.0.0.1:7380"
	b, err := consensus.EncodeCommand(consensus.UpsertNodes{At: time.Now(), Nodes: []consensus.Record{
		withWork,
		mk(2, consensus.StatusOnline, 6, 12, "amd"),
		mk(3, consensus.StatusOffline, 24, 16, "nvidia"),
		mk(4, consensus.StatusOnline, 0, 2, "none"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: 7, Data: b})
	fl := &fakeLeader{servers: []consensus.Server{
		{ID: "leader-1", Address: "127.0.0.1:8300", Voter: true, Leader: true},
		{ID: "f-2", Address: "127.0.0.1:8301", Voter: true},
	}}
	return serveTestAPI(t, fsm, fl, func(cfg *api.Config) {
		cfg.Token = token
		cfg.RemovePeer = fl.remove
	})
}

// serveTestAPI serves fsm (its agents and work items) with r as raft,
// edited by edit, until the test ends, and returns its address.
func serveTestAPI(t *testing.T, fsm *consensus.FSM, r api.Raft, edit func(*api.Config)) string {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Registry, cfg.Work, cfg.Raft = fsm, fsm, r
	cfg.LeaderHTTPAddr = func(string) (string, error) { return "", fmt.Errorf("unused") }
	cfg.LeaderEstablished = func() bool { return true } // a fake leader with nothing to catch up on
	if edit != nil {
		edit(&cfg)
	}
	s, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr()
}

// runAPICmd runs a command with a mock UI and returns code, stdout, stderr.
func runAPICmd(c interface{ Run([]string) int }, ui *cli.MockUi, args ...string) (int, string, string) {
	code := c.Run(args)
	return code, ui.OutputWriter.String(), ui.ErrorWriter.String()
}

// clearHTTPEnv keeps a developer's CHIFFON_* settings out of a test.
func clearHTTPEnv(t *testing.T) {
	for _, k := range []string{"CHIFFON_HTTP_ADDR", "CHIFFON_HTTP_TOKEN", "CHIFFON_TLS_CA", "CHIFFON_TLS_CERT", "CHIFFON_TLS_KEY", "CHIFFON_CONFIG_FILE", "CHIFFON_FORMAT", "CHIFFON_STALE", "CHIFFON_STATUS"} {
		t.Setenv(k, "") // restored at cleanup
		os.Unsetenv(k)
	}
}

func TestAgentsCommand_TableAndJSON(t *testing.T) {
	clearHTTPEnv(t)
	addr := startTestAPI(t, "")
	ui := cli.NewMockUi()
	code, out, errOut := runAPICmd(&agentsCommand{ui: ui}, ui, "-http-addr", addr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "AGENT ID") || len(lines) != 6 { // header, 4 agents, trailing
		t.Fatalf("table:\n%s", out)
	}
	if !strings.Contains(out, "offline") || !strings.Contains(out, "1× nvidia") || !strings.Contains(out, "5s ago") {
		t.Errorf("table lacks data:\n%s", out)
	}
	checkSampleAges(t, lines[1:5], 1)
	// Columns are aligned: STATUS starts at the same offset on every line.
	col := strings.Index(lines[0], "STATUS")
	for _, l := range lines[1:5] {
		if st := l[col:]; !strings.HasPrefix(st, "online") && !strings.HasPrefix(st, "offline") {
			t.Errorf("misaligned: %q", l)
		}
	}

	ui = cli.NewMockUi()
	code, out, _ = runAPICmd(&agentsCommand{ui: ui}, ui, "-http-addr", "http://"+addr, "-status", "online", "-format", "json", "-stale")
	var agents []apitype.Agent
	if code != 0 || json.Unmarshal([]byte(out), &agents) != nil || len(agents) != 3 {
		t.Fatalf("json (exit %d): %s", code, out)
	}
}

// TestAgentsCommand_JSONHasEveryRegistryField: -format json shows every
// field of the registry's record, the work handler's slots and address
// included (the client once decoded into a type that lacked them).
func TestAgentsCommand_JSONHasEveryRegistryField(t *testing.T) {
	clearHTTPEnv(t)
	addr := startTestAPI(t, "")
	ui := cli.NewMockUi()
	code, out, errOut := runAPICmd(&agentsCommand{ui: ui}, ui, "-http-addr", addr, "-format", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var agents []map[string]any
	if err := json.Unmarshal([]byte(out), &agents); err != nil || len(agents) != 4 {
		t.Fatalf("json (%v): %s", err, out)
	}
	var rec map[string]any
	b, _ := json.Marshal(consensus.Record{WorkSlots: 1, WorkAddr: "x"}) // no field left out by omitempty
	json.Unmarshal(b, &rec)
	for _, a := range agents {
		for k := range rec {
			if _, ok := a[k]; !ok {
				t.Errorf("agent %v lacks %q", a["agent_id"], k)
			}
		}
	}
	if a := agents[0]; a["agent_id"] != testAgentID(1) || a["work_addr"] != "127.0.0.1:7380" || a["work_slots"] != 2.0 {
		t.Errorf("first agent: work_slots %v, work_addr %v; want 2 and 127.0.0.1:7380", a["work_slots"], a["work_addr"])
	}
}

func TestAgentsCommand_Errors(t *testing.T) {
	clearHTTPEnv(t)
	addr := startTestAPI(t, "tok")
	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"bad status", nil, []string{"-status", "alive"}, 2, "online, suspect"},
		{"bad format", nil, []string{"-format", "yaml"}, 2, "table, json"},
		{"unknown flag", nil, []string{"-nope"}, 2, "-nope"},
		{"extra argument", nil, []string{"x"}, 2, "unexpected"},
		{"bad stale", nil, []string{"-stale=maybe"}, 2, "-stale"},
		{"missing ca file", nil, []string{"-tls-ca", "/nonexistent.pem"}, 2, "CA"},
		{"no token", nil, []string{"-http-addr", addr}, 1, "needs a token"},
		{"wrong token", nil, []string{"-http-addr", addr, "-http-token", "nope"}, 1, "wrong token (HTTP 403)"},
		{"token from env", map[string]string{"CHIFFON_HTTP_ADDR": addr, "CHIFFON_HTTP_TOKEN": "tok"}, nil, 0, ""},
		{"unreachable", nil, []string{"-http-addr", "127.0.0.1:1"}, 1, "cannot reach"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			ui := cli.NewMockUi()
			code, _, errOut := runAPICmd(&agentsCommand{ui: ui}, ui, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}

// TestRenderAgents_OrchestratorHasNoResources: only desktops sample, so an
// orchestrator-only node's resource columns say "-", not 0/0 cores; a node
// with both roles shows its resources.
func TestRenderAgents_OrchestratorHasNoResources(t *testing.T) {
	now := time.Now()
	out := renderAgents([]apitype.Agent{
		{AgentID: "o", Name: "orch-1", Roles: []string{"orchestrator"}, Status: "online", LastHeartbeatAt: now, StatusChangedAt: now},
		{AgentID: "b", Name: "both", Roles: []string{"orchestrator", "desktop"}, Status: "online", LastHeartbeatAt: now, StatusChangedAt: now,
			Metrics: apitype.ResourceMetrics{CPUCoresAvailable: 3.5, CPUCoresPhysical: 8, MemoryAvailableGB: 12}},
	}, now)
	lines := strings.Split(out, "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", out)
	}
	if f := strings.Fields(lines[1]); len(f) < 8 || f[4] != "-" || f[5] != "-" || f[6] != "-" || f[7] != "-" {
		t.Errorf("orchestrator row %q: want - in CORES FREE, MEM FREE, GPUS and VRAM MAX FREE", lines[1])
	}
	if !strings.Contains(lines[2], "3.5/8") || !strings.Contains(lines[2], "12.0 GB") || !strings.Contains(lines[2], "none") {
		t.Errorf("orchestrator+desktop row %q: want its resources", lines[2])
	}
}

// TestRenderAgents_Unreachable: a desktop the leader cannot reach shows it
// next to gossip's status; one with no unreachable_since (reachable, or
// from an older server) shows the status alone.
func TestRenderAgents_Unreachable(t *testing.T) {
	now := time.Now()
	since := now.Add(-time.Minute)
	out := renderAgents([]apitype.Agent{
		{AgentID: "a", Name: "cut", Roles: []string{"desktop"}, Status: "online", UnreachableSince: &since, LastHeartbeatAt: now, StatusChangedAt: now},
		{AgentID: "b", Name: "fine", Roles: []string{"desktop"}, Status: "online", Reachable: true, LastHeartbeatAt: now, StatusChangedAt: now},
	}, now)
	lines := strings.Split(out, "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", out)
	}
	if f := strings.Fields(lines[1]); len(f) < 3 || f[2] != "online/unreachable" {
		t.Errorf("cut row %q: want STATUS online/unreachable", lines[1])
	}
	if f := strings.Fields(lines[2]); len(f) < 3 || f[2] != "online" {
		t.Errorf("fine row %q: want STATUS online", lines[2])
	}
}

// checkSampleAges checks the SAMPLE AGE column, followed by after
// one-word columns (chiffon agents' OWNER, "-" for these desktops), of table rows
// of startTestAPI's agents: desks sampled 7 s ago show 7.0s or a little
// more, desk-4 (no sample time) "-".
func checkSampleAges(t *testing.T, rows []string, after int) {
	t.Helper()
	for _, l := range rows {
		f := strings.Fields(l)
		last := f[len(f)-1-after]
		if strings.Contains(l, "desk-4") {
			if last != "-" {
				t.Errorf("desk-4's sample age %q, want -: %q", last, l)
			}
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(last, "s"), 64)
		if err != nil || !strings.HasSuffix(last, "s") || v < 7 || v > 60 {
			t.Errorf("sample age %q, want about 7.0s: %q", last, l)
		}
	}
}

// TestRenderAgents_Owner: the OWNER column says whether the desktop's
// owner is at the keyboard and since when; "-" for a node that does not
// watch its owner.
func TestRenderAgents_Owner(t *testing.T) {
	now := time.Now()
	since := now.Add(-3 * time.Minute)
	out := renderAgents([]apitype.Agent{
		{AgentID: "a", Name: "busy", Roles: []string{"desktop"}, Status: "online", Owner: "active", OwnerSince: &since, LastHeartbeatAt: now, StatusChangedAt: now},
		{AgentID: "b", Name: "free", Roles: []string{"desktop"}, Status: "online", Owner: "idle", LastHeartbeatAt: now, StatusChangedAt: now},
		{AgentID: "c", Name: "headless", Roles: []string{"desktop"}, Status: "online", LastHeartbeatAt: now, StatusChangedAt: now},
	}, now)
	lines := strings.Split(out, "\n")
	if len(lines) != 4 || !strings.HasSuffix(strings.TrimSpace(lines[0]), "OWNER") {
		t.Fatalf("table:\n%s", out)
	}
	for i, want := range []string{"active 3m ago", "idle", "-"} {
		if !strings.HasSuffix(strings.TrimSpace(lines[i+1]), "  "+want) {
			t.Errorf("row %q: want OWNER %q", lines[i+1], want)
		}
	}
}
