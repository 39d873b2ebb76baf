// Package testlog sends a component's logs to testing.T.Log.
package testlog

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// New returns a logger that writes to t.Log and drops lines once the test
// has ended: serf leaves some goroutines (name-conflict resolution) running
// past Shutdown, and testing panics on a Log after the test.
//
// With -v the lines go out as they are written. Without it they are held
// and logged only if the test fails, after the test's own failure
// messages: a cluster test's log runs to thousands of lines, and a CI log
// cut in the middle once lost the one line that said what had failed.
//
// The loggers of one test share a writer, so that a cluster's nodes' lines
// stay in the order they were written.
func New(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(writerFor(t), &slog.HandlerOptions{Level: level}))
}

// writers maps a running test to its writer.
var writers sync.Map // testing.TB → *writer

func writerFor(t testing.TB) *writer {
	if w, ok := writers.Load(t); ok {
		return w.(*writer)
	}
	w := &writer{t: t, live: testing.Verbose()}
	if got, loaded := writers.LoadOrStore(t, w); loaded {
		return got.(*writer)
	}
	t.Cleanup(func() {
		w.end()
		writers.Delete(t)
	})
	return w
}

type writer struct {
	t    testing.TB
	live bool
	mu   sync.Mutex // guards done and held, and orders writes with end
	done bool
	held []string
}

func (w *writer) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.done:
	case w.live:
		w.t.Log(line)
	default:
		w.held = append(w.held, line)
	}
	return len(p), nil
}

// end runs as a cleanup: the test's other cleanups (registered later) have
// already run, so shutdown logs are among the held lines.
func (w *writer) end() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	if w.t.Failed() && len(w.held) > 0 {
		w.t.Logf("the test failed (see above); its %d log lines follow", len(w.held))
		for _, l := range w.held {
			w.t.Log(l)
		}
	}
	w.held = nil
}

// Buffer collects output written from several goroutines (a script's
// stdout, loggers) for a test to read while the writers go on.
type Buffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
