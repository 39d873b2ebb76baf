package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

func TestOperatorCommand_ListAndRemovePeers(t *testing.T) {
	clearHTTPEnv(t)
	addr := startTestAPI(t, "tok")
	t.Setenv("CHIFFON_HTTP_TOKEN", "tok")
	ui := cli.NewMockUi()
	code, out, errOut := runAPICmd(&operatorRaftListPeersCommand{ui: ui}, ui, "-http-addr", addr)
	if code != 0 || !strings.HasPrefix(out, "ID") || !strings.Contains(out, "leader-1") || !strings.Contains(out, "leader") {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	ui = cli.NewMockUi()
	code, out, errOut = runAPICmd(&operatorRaftRemovePeerCommand{ui: ui}, ui, "-http-addr", addr, "f-2")
	if code != 0 || !strings.Contains(out, "f-2") {
		t.Fatalf("remove: exit %d: %s %s", code, out, errOut)
	}
	ui = cli.NewMockUi()
	code, out, _ = runAPICmd(&operatorRaftListPeersCommand{ui: ui}, ui, "-http-addr", addr, "-format", "json")
	var peers []apitype.Peer
	if code != 0 || json.Unmarshal([]byte(out), &peers) != nil || len(peers) != 1 || peers[0].State != "leader" {
		t.Fatalf("after remove: %s", out)
	}
	ui = cli.NewMockUi()
	code, _, errOut = runAPICmd(&operatorRaftRemovePeerCommand{ui: ui}, ui, "-http-addr", addr, "f-2")
	if code != 1 || !strings.Contains(errOut, "no raft peer") {
		t.Fatalf("remove again: exit %d, %q", code, errOut)
	}
	for _, args := range [][]string{nil, {"a", "b"}, {"-nope", "x"}} {
		ui = cli.NewMockUi()
		if code, _, _ := runAPICmd(&operatorRaftRemovePeerCommand{ui: ui}, ui, args...); code != 2 {
			t.Errorf("remove-peer %q: exit %d, want 2", args, code)
		}
	}
	ui = cli.NewMockUi()
	if code := (&operatorCommand{ui: ui}).Run(nil); code != cli.RunResultHelp {
		t.Errorf("operator: %d", code)
	}
}

// TestOperatorCommand_NestedInCLI checks that the command names resolve
// through hashicorp/cli as main.go registers them.
func TestOperatorCommand_NestedInCLI(t *testing.T) {
	clearHTTPEnv(t)
	addr := startTestAPI(t, "")
	ui := cli.NewMockUi()
	c := cli.NewCLI("chiffon", "test")
	c.Args = []string{"operator", "raft", "list-peers", "-http-addr", addr}
	c.HelpWriter = ui.ErrorWriter
	c.Commands = map[string]cli.CommandFactory{
		"operator":                  func() (cli.Command, error) { return &operatorCommand{ui: ui}, nil },
		"operator raft":             func() (cli.Command, error) { return &operatorRaftCommand{ui: ui}, nil },
		"operator raft list-peers":  func() (cli.Command, error) { return &operatorRaftListPeersCommand{ui: ui}, nil },
		"operator raft remove-peer": func() (cli.Command, error) { return &operatorRaftRemovePeerCommand{ui: ui}, nil },
	}
	code, err := c.Run()
	if err != nil || code != 0 || !strings.Contains(ui.OutputWriter.String(), "leader-1") {
		t.Fatalf("exit %d, %v: %s %s", code, err, ui.OutputWriter.String(), ui.ErrorWriter.String())
	}
}
