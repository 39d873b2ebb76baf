package gossip

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer for loggers on several goroutines.
type lockedBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// line returns the first logged line containing msg, or "".
func (l *lockedBuffer) line(msg string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for line := range strings.SplitSeq(l.b.String(), "\n") {
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
	var buf lockedBuffer
	c := fastConfig(t, "closing")
	c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	g := start(t, c)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{`msg="Shutdown without a Leave"`, `msg="Serf shutdown detected, quitting"`} {
		var line string
		waitFor(t, 5*time.Second, msg+" logged", func() bool { line = buf.line(msg); return line != "" })
		if !strings.Contains(line, "level=INFO") {
			t.Errorf("want it at INFO: %s", line)
		}
	}
}
