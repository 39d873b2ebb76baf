package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

func TestWorkCommand_Status(t *testing.T) {
	clearHTTPEnv(t)
	fsm := consensus.NewFSM()
	b, err := consensus.EncodeCommand(consensus.SubmitWork{At: time.Now(), Items: []consensus.WorkItem{{WorkID: "job-1", MaxAttempts: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: b})
	srv := "http://" + serveTestAPI(t, fsm, &fakeLeader{}, nil)

	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-http-addr", srv, "job-1"}, 0, `"status": "pending"`},
		{[]string{"-http-addr", srv, "nope"}, 1, "unknown work_id"},
		{[]string{}, 2, "want: chiffon work status [options] WORK_ID"},
		{[]string{"-http-addr", srv, "job-1", "extra"}, 2, "want: chiffon work status [options] WORK_ID"},
		{[]string{"-http-addr", srv, "-stale", "job-1"}, 0, `"work_id": "job-1"`},
		{[]string{"-tls-ca", "/nonexistent/ca.pem", "job-1"}, 2, "/nonexistent/ca.pem"},
	}
	for _, tt := range tests {
		ui := cli.NewMockUi()
		code := (&workStatusCommand{ui: ui}).Run(tt.args)
		out := ui.OutputWriter.String() + ui.ErrorWriter.String()
		if code != tt.code || !strings.Contains(out, tt.want) {
			t.Errorf("work status %v = %d, %q; want %d and %q", tt.args, code, out, tt.code, tt.want)
		}
	}
}

func TestSubmitCommand_Usage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-payload", "{}"}, "-amqp-url is required"},
		{[]string{"-amqp-url", "amqp://x/"}, "-payload is required"},
		{[]string{"-amqp-url", "amqp://x/", "-payload", "{nope"}, "not valid JSON"},
		{[]string{"-amqp-url", "amqp://x/", "-payload", "@/does/not/exist"}, "-payload"},
		{[]string{"-amqp-url", "amqp://x/", "-payload", "1", "-gpu-type", "tpu"}, "-gpu-type"},
	} {
		t.Setenv("CHIFFON_AMQP_URL", "")
		ui := cli.NewMockUi()
		if code := (&submitCommand{ui: ui}).Run(tt.args); code != 2 || !strings.Contains(ui.ErrorWriter.String(), tt.want) {
			t.Errorf("submit %v = %d, %q; want 2 and %q", tt.args, code, ui.ErrorWriter.String(), tt.want)
		}
	}
}

func TestWorkCommand_List(t *testing.T) {
	clearHTTPEnv(t)
	fsm := consensus.NewFSM()
	at := time.Now().Add(-time.Minute)
	apply := func(index uint64, c consensus.Command) {
		b, err := consensus.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		fsm.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: b})
	}
	apply(1, consensus.SubmitWork{At: at, Items: []consensus.WorkItem{{WorkID: "a", MaxAttempts: 3}, {WorkID: "b", MaxAttempts: 3}, {WorkID: "c", MaxAttempts: 3}}})
	apply(2, consensus.UpdateWork{At: at, Transitions: []consensus.WorkTransition{
		{WorkID: "b", To: consensus.WorkAssigned, Attempt: 1, AgentID: "desk-1", GPUIndex: 1}}})
	apply(3, consensus.UpdateWork{At: at, Transitions: []consensus.WorkTransition{
		{WorkID: "b", To: consensus.WorkFailed, Attempt: 1, ExitCode: 3, Error: "exit status 3"}}})
	srv := "http://" + serveTestAPI(t, fsm, &fakeLeader{}, nil)

	run := func(args ...string) (int, string, string) {
		ui := cli.NewMockUi()
		return runAPICmd(&workListCommand{ui: ui}, ui, append([]string{"-http-addr", srv}, args...)...)
	}
	code, out, errOut := run()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "WORK ID") {
		t.Fatalf("work list: exit %d: %s %s", code, out, errOut)
	}
	if f := strings.Fields(lines[2]); len(f) < 10 || f[0] != "b" || f[1] != "failed" || f[2] != "desk-1" || f[3] != "1" || f[4] != "1/3" || f[9] != "3" { // "1m ago" is two fields
		t.Errorf("failed item's row: %q", lines[2])
	}
	if !strings.Contains(lines[2], "exit status 3") || !strings.HasPrefix(lines[1], "a ") || !strings.Contains(lines[1], "pending") {
		t.Errorf("rows:\n%s", out)
	}

	code, out, _ = run("-status", "pending", "-limit", "1")
	if code != 0 || !strings.Contains(out, "\na ") || strings.Contains(out, "\nc ") || !strings.Contains(out, "(1 of 2 shown") {
		t.Errorf("work list -status pending -limit 1: exit %d:\n%s", code, out)
	}
	code, out, _ = run("-format", "json")
	var items []apitype.WorkSummary
	if code != 0 || json.Unmarshal([]byte(out), &items) != nil || len(items) != 3 || items[1].AgentID != "desk-1" || items[1].ExitCode != 3 {
		t.Errorf("work list -format json: exit %d: %s", code, out)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-status", "done"}, "allowed: pending, assigned, running, succeeded, failed"},
		{[]string{"-limit", "0"}, "allowed: 1 to 10000"},
		{[]string{"-format", "yaml"}, "yaml"},
		{[]string{"extra"}, `unexpected arguments ["extra"]`},
	} {
		if code, _, errOut := run(tt.args...); code != 2 || !strings.Contains(errOut, tt.want) {
			t.Errorf("work list %v: exit %d, %q; want 2 and %q", tt.args, code, errOut, tt.want)
		}
	}
}
