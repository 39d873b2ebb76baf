package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/api"
	"github.com/chiffon-dev/chiffon/consensus"
)

// lostFollower is a raft follower cut off from the cluster: no leader,
// last heard from one a minute ago.
type lostFollower struct{ contact time.Time }

func (f lostFollower) IsLeader() bool                       { return false }
func (f lostFollower) Leader() (string, string)             { return "", "" }
func (f lostFollower) VerifyLeader() error                  { return raft.ErrNotLeader }
func (f lostFollower) LastContact() time.Time               { return f.contact }
func (f lostFollower) ID() string                           { return "f-2" }
func (f lostFollower) Stats() map[string]string             { return map[string]string{"state": "Candidate"} }
func (f lostFollower) Servers() ([]consensus.Server, error) { return nil, nil }

var _ api.Raft = lostFollower{}

// TestAgentsCommand_MaxStale: -max-stale reads the contacted node's replica
// only while it is fresh enough; a follower cut off for longer refuses,
// and the CLI says why, while -stale still reads it.
func TestAgentsCommand_MaxStale(t *testing.T) {
	clearHTTPEnv(t)
	fsm := consensus.NewFSM()
	applyCLI(t, fsm, 3, consensus.Record{AgentID: testAgentID(1), Name: "desk-1", Roles: []string{"desktop"},
		Status: consensus.StatusOnline, LastHeartbeatAt: time.Now()})
	addr := serveTestAPI(t, fsm, lostFollower{contact: time.Now().Add(-time.Minute)}, func(c *api.Config) {
		c.LeaderWait = 200 * time.Millisecond
	})
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"within the bound", []string{"-max-stale", "2m"}, 0, "desk-1"},
		{"past the bound", []string{"-max-stale", "5s"}, 1, "max_stale=5s: this node last heard from the leader 1m0"},
		{"plain stale", []string{"-stale"}, 0, "desk-1"},
		{"negative", []string{"-max-stale", "-1s"}, 2, "-max-stale"},
		{"not a duration", []string{"-max-stale", "soon"}, 2, "max-stale"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ui := cli.NewMockUi()
			code, out, errOut := runAPICmd(&agentsCommand{ui: ui}, ui, append([]string{"-http-addr", addr}, tc.args...)...)
			if code != tc.code || !strings.Contains(out+errOut, tc.out) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d and %q", code, out, errOut, tc.code, tc.out)
			}
		})
	}
	ui := cli.NewMockUi()
	if code, _, errOut := runAPICmd(&capacityCommand{ui: ui}, ui, "-http-addr", addr, "-max-stale", "5s", "-consistent"); code != 2 ||
		!strings.Contains(errOut, "exclude") {
		t.Fatalf("capacity -max-stale -consistent: exit %d %q", code, errOut)
	}
	ui = cli.NewMockUi()
	if code, out, errOut := runAPICmd(&capacityCommand{ui: ui}, ui, "-http-addr", addr, "-max-stale", "2m"); code != 0 {
		t.Fatalf("capacity -max-stale 2m: exit %d %q %q", code, out, errOut)
	}
}

// TestAgentsCommand_ShowsFlapScore: the table's FLAPS column is the
// server's decayed flap score.
func TestAgentsCommand_ShowsFlapScore(t *testing.T) {
	clearHTTPEnv(t)
	fsm := consensus.NewFSM()
	now := time.Now()
	applyCLI(t, fsm, 3,
		consensus.Record{AgentID: testAgentID(1), Name: "laptop", Roles: []string{"desktop"}, Status: consensus.StatusOnline,
			FlapScore: 2.5, StatusChangedAt: now, LastHeartbeatAt: now},
		consensus.Record{AgentID: testAgentID(2), Name: "tower", Roles: []string{"desktop"}, Status: consensus.StatusOnline,
			StatusChangedAt: now, LastHeartbeatAt: now})
	addr := serveTestAPI(t, fsm, &fakeLeader{}, nil)
	ui := cli.NewMockUi()
	code, out, errOut := runAPICmd(&agentsCommand{ui: ui}, ui, "-http-addr", addr)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasSuffix(lines[0], "FLAPS  SAMPLE AGE  OWNER") {
		t.Fatalf("exit %d, stderr %q, table:\n%s", code, errOut, out)
	}
	if f := strings.Fields(lines[1]); f[1] != "laptop" || f[len(f)-3] != "2.5" {
		t.Errorf("laptop row %q: want FLAPS 2.5", lines[1])
	}
	if f := strings.Fields(lines[2]); f[1] != "tower" || f[len(f)-3] != "0.0" {
		t.Errorf("tower row %q: want FLAPS 0.0", lines[2])
	}
}

// applyCLI applies an upsert of recs to fsm at index, as raft would.
func applyCLI(t *testing.T, fsm *consensus.FSM, index uint64, recs ...consensus.Record) {
	t.Helper()
	b, err := consensus.EncodeCommand(consensus.UpsertNodes{At: time.Now(), Nodes: recs})
	if err != nil {
		t.Fatal(err)
	}
	fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: index, Data: b})
}
