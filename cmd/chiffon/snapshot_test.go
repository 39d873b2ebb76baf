package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/consensus"
)

// submitWork records a pending work item through the leader.
func submitWork(t *testing.T, st *consensus.Store, id string) {
	t.Helper()
	w := consensus.WorkItem{WorkID: id, MaxAttempts: 1, GPUIndex: consensus.NoGPU, Payload: []byte(`{"n":1}`)}
	if _, err := st.Apply(consensus.SubmitWork{At: time.Now(), Items: []consensus.WorkItem{w}}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotCommand_RoundTrip saves the registry through a follower (which
// sends the CLI on to the leader, token and all), changes the registry,
// restores the backup and checks that every orchestrator is back to it.
func TestSnapshotCommand_RoundTrip(t *testing.T) {
	clearDevEnv(t)
	const token = "s3cret"
	dc := startDevCluster(t, devSettings{token: token})
	leader := dc.leader()
	if leader == nil {
		t.Fatal("no leader")
	}
	var follower *devNode
	for _, o := range dc.orchs() {
		if o != leader {
			follower = o
			break
		}
	}
	st := leader.n.Store()
	submitWork(t, st, "before-backup")
	file := filepath.Join(t.TempDir(), "registry.snap")
	t.Setenv("CHIFFON_HTTP_TOKEN", token)
	// The dev cluster is secured: the CLI's certificate, as the banner's
	// export gives it.
	ca, cert, key, err := dc.sec.cliFiles()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHIFFON_TLS_CA", ca)
	t.Setenv("CHIFFON_TLS_CERT", cert)
	t.Setenv("CHIFFON_TLS_KEY", key)

	ui := cli.NewMockUi()
	code, out, errOut := runAPICmd(&operatorSnapshotSaveCommand{ui: ui}, ui, "-http-addr", follower.n.APIAddr(), file)
	if code != 0 || !strings.Contains(out, "Saved registry snapshot to "+file) {
		t.Fatalf("save: exit %d: %s %s", code, out, errOut)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".*tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// Change the registry: one item more, the saved one gone.
	submitWork(t, st, "after-backup")
	if _, err := st.Apply(consensus.DeleteWork{At: time.Now(), WorkIDs: []string{"before-backup"}}, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	ui = cli.NewMockUi()
	code, out, errOut = runAPICmd(&operatorSnapshotRestoreCommand{ui: ui}, ui, "-http-addr", follower.n.APIAddr(), file)
	if code != 0 || !strings.Contains(out, "6 nodes, 1 work items") {
		t.Fatalf("restore: exit %d: %s %s", code, out, errOut)
	}
	for _, o := range dc.orchs() {
		fsm := o.n.Store().FSM()
		waitFor(t, 10*time.Second, o.spec.name+" restored", func() (bool, string) {
			_, before := fsm.GetWork("before-backup")
			_, after := fsm.GetWork("after-backup")
			return before && !after && fsm.Len() == 6,
				fmt.Sprintf("before-backup %t, after-backup %t, %d nodes", before, after, fsm.Len())
		})
	}

	// -stale saves a follower's own replica without asking the leader.
	ui = cli.NewMockUi()
	stale := filepath.Join(t.TempDir(), "stale.snap")
	if code, out, errOut := runAPICmd(&operatorSnapshotSaveCommand{ui: ui}, ui, "-http-addr", follower.n.APIAddr(), "-stale", stale); code != 0 {
		t.Fatalf("save -stale: exit %d: %s %s", code, out, errOut)
	}

	// Errors: a wrong token, a file that is no snapshot, a missing file.
	ui = cli.NewMockUi()
	if code, _, errOut := runAPICmd(&operatorSnapshotSaveCommand{ui: ui}, ui, "-http-addr", follower.n.APIAddr(), "-http-token", "wrong", file); code != 1 ||
		!strings.Contains(errOut, "403") {
		t.Errorf("wrong token: exit %d: %s", code, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.snap")
	if err := os.WriteFile(bad, []byte("not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	ui = cli.NewMockUi()
	if code, _, errOut := runAPICmd(&operatorSnapshotRestoreCommand{ui: ui}, ui, "-http-addr", follower.n.APIAddr(), bad); code != 1 ||
		!strings.Contains(errOut, "bad registry snapshot") || !strings.Contains(errOut, "400") {
		t.Errorf("bad snapshot: exit %d: %s", code, errOut)
	}
	if _, ok := st.FSM().GetWork("before-backup"); !ok {
		t.Error("a rejected restore changed the registry")
	}
	ui = cli.NewMockUi()
	if code, _, errOut := runAPICmd(&operatorSnapshotRestoreCommand{ui: ui}, ui, "-http-addr", follower.n.APIAddr(), bad+".missing"); code != 1 {
		t.Errorf("missing file: exit %d: %s", code, errOut)
	}
}

func TestSnapshotCommand_Usage(t *testing.T) {
	clearHTTPEnv(t)
	for _, args := range [][]string{nil, {"a", "b"}, {"-nope", "x"}} {
		ui := cli.NewMockUi()
		if code, _, _ := runAPICmd(&operatorSnapshotSaveCommand{ui: ui}, ui, args...); code != 2 {
			t.Errorf("save %q: exit %d, want 2", args, code)
		}
		ui = cli.NewMockUi()
		if code, _, _ := runAPICmd(&operatorSnapshotRestoreCommand{ui: ui}, ui, args...); code != 2 {
			t.Errorf("restore %q: exit %d, want 2", args, code)
		}
	}
	ui := cli.NewMockUi()
	if code := (&operatorSnapshotCommand{ui: ui}).Run(nil); code != cli.RunResultHelp {
		t.Errorf("operator snapshot: %d", code)
	}
	// A server that is not a Chiffon orchestrator with snapshots: exit 1.
	addr := startTestAPI(t, "")
	ui = cli.NewMockUi()
	if code, _, errOut := runAPICmd(&operatorSnapshotSaveCommand{ui: ui}, ui, "-http-addr", addr, filepath.Join(t.TempDir(), "x")); code != 1 ||
		!strings.Contains(errOut, "404") {
		t.Errorf("save against a server without the endpoint: exit %d: %s", code, errOut)
	}
}
