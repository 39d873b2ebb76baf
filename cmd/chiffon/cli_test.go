package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/cli"
)

// TestOptions_FlagsAfterPositionals: a flag after a positional argument
// counts (`chiffon work status ID -http-addr X`); after "--" everything is
// positional.
func TestOptions_FlagsAfterPositionals(t *testing.T) {
	clearHTTPEnv(t)
	for _, tt := range []struct {
		args     []string
		rest     []string
		addr     string
		stale    bool
		wantsErr bool
	}{
		{args: []string{"ID", "-http-addr", "h:1"}, rest: []string{"ID"}, addr: "h:1"},
		{args: []string{"-stale", "ID", "--http-addr=h:2"}, rest: []string{"ID"}, addr: "h:2", stale: true},
		{args: []string{"a", "-stale", "b", "-http-addr", "h:3"}, rest: []string{"a", "b"}, addr: "h:3", stale: true},
		{args: []string{"ID", "--", "-stale"}, rest: []string{"ID", "-stale"}, addr: "127.0.0.1:8480"},
		{args: []string{"--", "-x"}, rest: []string{"-x"}, addr: "127.0.0.1:8480"},
		{args: []string{"ID", "-nope"}, wantsErr: true},
	} {
		var s snapshotSaveSettings
		rest, err := s.options().parse("operator snapshot save", tt.args)
		if tt.wantsErr {
			if err == nil {
				t.Errorf("parse %q: no error, want one for the unknown flag", tt.args)
			}
			continue
		}
		if err != nil || !slices.Equal(rest, tt.rest) || s.http.addr != tt.addr || s.stale != tt.stale {
			t.Errorf("parse %q = %q, %v (http-addr %q, stale %v); want %q (http-addr %q, stale %v)",
				tt.args, rest, err, s.http.addr, s.stale, tt.rest, tt.addr, tt.stale)
		}
	}
}

// TestCommands_FlagsAfterPositionals runs the subcommands that take a
// positional argument with their flags after it.
func TestCommands_FlagsAfterPositionals(t *testing.T) {
	clearHTTPEnv(t)
	work := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/work/job-1" {
			http.Error(w, `{"error":"unknown work_id"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"work_id":"job-1","status":"pending"}`))
	}))
	t.Cleanup(work.Close)
	ui := cli.NewMockUi()
	code, out, errOut := runAPICmd(&workStatusCommand{ui: ui}, ui, "job-1", "-http-addr", work.URL)
	if code != 0 || !strings.Contains(out, `"status": "pending"`) {
		t.Errorf("work status job-1 -http-addr URL: exit %d: %s %s", code, out, errOut)
	}

	addr := startTestAPI(t, "")
	ui = cli.NewMockUi()
	code, out, errOut = runAPICmd(&operatorRaftRemovePeerCommand{ui: ui}, ui, "f-2", "-http-addr", addr)
	if code != 0 || !strings.Contains(out, "Removed raft peer f-2") {
		t.Errorf("operator raft remove-peer f-2 -http-addr ADDR: exit %d: %s %s", code, out, errOut)
	}
}

// TestRun_UnknownCommandIsNamed: an unknown command, top-level or under a
// group, is named before the usage, with a non-zero exit.
func TestRun_UnknownCommandIsNamed(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `chiffon: unknown command "frobnicate"`},
		{[]string{"frobnicate", "-x"}, `chiffon: unknown command "frobnicate"`},
		{[]string{"operator", "frob"}, `chiffon: unknown command "operator frob"`},
		{[]string{"operator", "raft", "frob"}, `chiffon: unknown command "operator raft frob"`},
		{[]string{"work", "nope"}, `chiffon: unknown command "work nope"`},
	} {
		var out, errOut bytes.Buffer
		code := run(tt.args, &out, &errOut)
		if code == 0 || !strings.Contains(errOut.String(), tt.want) || !strings.Contains(errOut.String(), "Usage: chiffon") {
			t.Errorf("chiffon %q: exit %d, stderr %q; want non-zero, %q and the usage", tt.args, code, errOut.String(), tt.want)
		}
	}
	// A group alone shows its help, without calling anything unknown.
	var out, errOut bytes.Buffer
	if code := run([]string{"operator"}, &out, &errOut); code == 0 || strings.Contains(errOut.String(), "unknown") ||
		!strings.Contains(errOut.String(), "Usage: chiffon operator") {
		t.Errorf("chiffon operator: exit %d, stderr %q", code, errOut.String())
	}
}

// TestVersionCommand_PrintsVersionAsGiven: a tag keeps its own "v"; a
// commit hash or "dev" gets none.
func TestVersionCommand_PrintsVersionAsGiven(t *testing.T) {
	saved := version
	t.Cleanup(func() { version = saved })
	for _, v := range []string{"v1.2.0", "5e89cc2", "5e89cc2-dirty", "dev"} {
		version = v
		var out, errOut bytes.Buffer
		if code := run([]string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "Chiffon "+v+" (") {
			t.Errorf("version %q: exit %d, %q; want it to start with %q", v, code, out.String(), "Chiffon "+v+" (")
		}
	}
	// The second line names each wire format's version (0.2.0's formats, 0.1.0 had raft commands 1-7:
	// a change here is a compatibility decision for OPERATIONS.md).
	var out bytes.Buffer
	run([]string{"version"}, &out, &out)
	want := "Wire formats: gossip tags cv=1, raft commands 1-8, raft snapshots v1, work API /v1/work, AMQP x-chiffon-schema 1"
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 2 || lines[1] != want {
		t.Errorf("chiffon version:\n%s\nwant a second line %q", out.String(), want)
	}
}
