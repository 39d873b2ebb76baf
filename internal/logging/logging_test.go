package logging

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestStdWriterExpecting_DemotesOnlyExpectedWarnings: a WARN line the
// predicate expects is logged at INFO; other lines keep their level.
func TestStdWriterExpecting_DemotesOnlyExpectedWarnings(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w := StdWriterExpecting(l, func(lib, msg string) bool { return lib == "serf" && msg == "Shutdown without a Leave" })
	for _, line := range []string{
		"[WARN] serf: Shutdown without a Leave",
		"[WARN] memberlist: Shutdown without a Leave",
		"[WARN] serf: something else",
		"[ERR] serf: Shutdown without a Leave",
	} {
		fmt.Fprintln(w, line)
	}
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{"level=INFO", "level=WARN", "level=WARN", "level=ERROR"}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("line %d: %s; want %s", i, got[i], want[i])
		}
	}
}
