package probe

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// logBuffer collects log output so tests can count lines, and echoes every
// line to t.Log so a failing test shows what the Prober said.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	// buf holds everything written. Guarded by mu.
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.t.Log(strings.TrimRight(string(p), "\n"))
	return b.buf.Write(p)
}

// lines returns the logged lines that contain every one of subs.
func (b *logBuffer) lines(subs ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for line := range strings.Lines(b.buf.String()) {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// newTestLogger returns a debug-level logger writing to a logBuffer.
func newTestLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	b := &logBuffer{t: t}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// fixedHost is a HostSource returning h, so GPU tests do not depend on the
// machine they run on.
func fixedHost(h HostSample) func(context.Context) (HostSample, error) {
	return func(context.Context) (HostSample, error) { return h, nil }
}

// testHost is a plausible 8-core desktop.
var testHost = HostSample{CPULoad1: 1.5, CPULoad5: 1, CPULoad15: 0.5, CPUCoresPhysical: 8, MemoryPercent: 40, MemoryAvailableGB: 20}

// writeScript writes an executable shell script into a fresh temp dir and
// returns its path. Tests that exec scripts do not run in parallel: a fork
// in another goroutine while this file is open for writing makes exec fail
// with ETXTBSY.
func writeScript(t testing.TB, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nvidia-smi")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// newProber calls New and registers Close as cleanup.
func newProber(t testing.TB, cfg Config) *Prober {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// mustSample takes a sample and fails the test on error.
func mustSample(t testing.TB, p *Prober) Sample {
	t.Helper()
	s, err := p.Sample(context.Background())
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	return s
}

// near reports whether a and b differ by less than 0.01.
func near(a, b float64) bool {
	d := a - b
	return d < 0.01 && d > -0.01
}

// failingNVML is an NVML whose Init fails as it does without a driver;
// every other function is nil, so calling one panics the test.
func failingNVML() *mock.Interface {
	return &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
}
