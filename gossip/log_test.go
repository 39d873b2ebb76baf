package gossip

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testlog"
)

// logLine returns the first line of buf containing msg, or "".
func logLine(buf *testlog.Buffer, msg string) string {
	for line := range strings.SplitSeq(buf.String(), "\n") {
		if strings.Contains(line, msg) {
			return line
		}
	}
	return ""
}

// TestGossip_CloseLogsExpectedLinesAtInfo: the lines serf writes because
// Close stops it ("Shutdown without a Leave", "Serf shutdown detected")
// are logged at INFO, not as warnings.
func TestGossip_CloseLogsExpectedLinesAtInfo(t *testing.T) {
	var buf testlog.Buffer
	c := fastConfig(t, "closing")
	c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	g := start(t, c)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{`msg="Shutdown without a Leave"`, `msg="Serf shutdown detected, quitting"`} {
		var line string
		waitFor(t, 5*time.Second, msg+" logged", func() bool { line = logLine(&buf, msg); return line != "" })
		if !strings.Contains(line, "level=INFO") {
			t.Errorf("want it at INFO: %s", line)
		}
	}
}
