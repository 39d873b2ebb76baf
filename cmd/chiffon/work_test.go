package main

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/node/dispatch"
)

func TestWorkCommand_Status(t *testing.T) {
	clearHTTPEnv(t)
	fsm := consensus.NewFSM()
	b, err := consensus.EncodeCommand(consensus.SubmitWork{At: time.Now(), Items: []consensus.WorkItem{{WorkID: "job-1", MaxAttempts: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: b})
	srv := httptest.NewServer(dispatch.StatusHandler(fsm))
	t.Cleanup(srv.Close)

	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-http-addr", srv.URL, "status", "job-1"}, 0, `"status": "pending"`},
		{[]string{"-http-addr", srv.URL, "status", "nope"}, 1, "unknown work_id"},
		{[]string{"status"}, 2, "want: chiffon work status WORK_ID"},
		{[]string{"-http-addr", srv.URL, "-stale", "status", "job-1"}, 0, `"work_id": "job-1"`},
		{[]string{"-tls-ca", "/nonexistent/ca.pem", "status", "job-1"}, 2, "/nonexistent/ca.pem"},
	}
	for _, tt := range tests {
		ui := cli.NewMockUi()
		code := (&workCommand{ui: ui}).Run(tt.args)
		out := ui.OutputWriter.String() + ui.ErrorWriter.String()
		if code != tt.code || !strings.Contains(out, tt.want) {
			t.Errorf("work %v = %d, %q; want %d and %q", tt.args, code, out, tt.code, tt.want)
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
