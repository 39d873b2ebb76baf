package consensus

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestHCLogAdapter_StartupElectionAtInfo: the election every node starts
// with (no leader known yet) is logged at INFO; one after a leader was
// known, and any later one, stays a warning.
func TestHCLogAdapter_StartupElectionAtInfo(t *testing.T) {
	levelOf := func(buf *bytes.Buffer, i int) string {
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if i >= len(lines) {
			t.Fatalf("want line %d, got:\n%s", i, buf.String())
		}
		for _, f := range strings.Fields(lines[i]) {
			if v, ok := strings.CutPrefix(f, "level="); ok {
				return v
			}
		}
		return ""
	}
	newLogger := func() (*bytes.Buffer, func(lastLeader raft.ServerID)) {
		var buf bytes.Buffer
		l := newHCLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), "raft")
		// raft logs through a derived logger, with its IDs as raft types.
		d := l.With("node-id", "n1")
		return &buf, func(lastLeader raft.ServerID) {
			d.Warn(electionMsg, "last-leader-addr", raft.ServerAddress(""), "last-leader-id", lastLeader)
		}
	}

	buf, elect := newLogger()
	elect("")   // start-up: no leader yet
	elect("")   // no leader again: not the start any more
	elect("n2") // a known leader was lost
	for i, want := range []string{"INFO", "WARN", "WARN"} {
		if got := levelOf(buf, i); got != want {
			t.Errorf("election %d logged at %s, want %s:\n%s", i, got, want, buf)
		}
	}

	// A node that knew a leader before its first election warns.
	buf, elect = newLogger()
	elect("n2")
	elect("")
	for i, want := range []string{"WARN", "WARN"} {
		if got := levelOf(buf, i); got != want {
			t.Errorf("after a known leader, election %d logged at %s, want %s:\n%s", i, got, want, buf)
		}
	}

	// Other warnings are untouched.
	buf, _ = newLogger()
	newHCLogger(slog.New(slog.NewTextHandler(buf, nil)), "raft").Warn("failed to contact", "server-id", "n2")
	if got := levelOf(buf, 0); got != "WARN" {
		t.Errorf("other warning logged at %s:\n%s", got, buf)
	}
}
