// Package logging builds Chiffon's slog loggers and adapts the standard
// library loggers that serf, memberlist and raft write to.
package logging

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// ParseLevel maps a level name (debug, info, warn, error; any case) to a
// slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trace", "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "err", "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q: use debug, info, warn or error", s)
}

// Tee is a slog.Handler that writes to a primary handler and, once a monitor
// writer is attached, also renders every record as a serf-style line
// ("[INFO] component: message k=v") so `serf monitor` can filter by level.
type Tee struct {
	primary slog.Handler
	level   slog.Leveler
	shared  *monitor
	attrs   []slog.Attr
	group   string
}

type monitor struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

// New returns a logger writing text (or JSON) to w at the given level, and
// the Tee behind it so a monitor can be attached later.
func New(w io.Writer, level slog.Level, json bool) (*slog.Logger, *Tee) {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if json {
		h = slog.NewJSONHandler(w, opts)
	}
	t := &Tee{primary: h, level: level, shared: &monitor{}}
	return slog.New(t), t
}

// SetMonitor attaches (or with nil detaches) the writer that receives
// serf-style lines.
func (t *Tee) SetMonitor(w io.Writer) {
	t.shared.mu.Lock()
	t.shared.w = w
	t.shared.mu.Unlock()
}

// Enabled implements slog.Handler.
func (t *Tee) Enabled(ctx context.Context, l slog.Level) bool {
	return t.primary.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (t *Tee) Handle(ctx context.Context, r slog.Record) error {
	err := t.primary.Handle(ctx, r)
	t.shared.mu.Lock()
	w := t.shared.w
	t.shared.mu.Unlock()
	if w == nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString(r.Time.Format("2006/01/02 15:04:05 "))
	b.WriteString("[" + levelName(r.Level) + "] ")
	comp := ""
	var rest []slog.Attr
	for _, a := range t.attrs {
		if a.Key == "component" {
			comp = a.Value.String()
		} else {
			rest = append(rest, a)
		}
	}
	if comp != "" {
		b.WriteString(comp + ": ")
	}
	b.WriteString(r.Message)
	write := func(a slog.Attr) {
		key := a.Key
		if t.group != "" {
			key = t.group + "." + key
		}
		fmt.Fprintf(&b, " %s=%v", key, a.Value)
	}
	for _, a := range rest {
		write(a)
	}
	r.Attrs(func(a slog.Attr) bool { write(a); return true })
	_, _ = w.Write(b.Bytes())
	return err
}

// WithAttrs implements slog.Handler.
func (t *Tee) WithAttrs(as []slog.Attr) slog.Handler {
	c := *t
	c.primary = t.primary.WithAttrs(as)
	c.attrs = append(append([]slog.Attr(nil), t.attrs...), as...)
	return &c
}

// WithGroup implements slog.Handler.
func (t *Tee) WithGroup(name string) slog.Handler {
	c := *t
	c.primary = t.primary.WithGroup(name)
	c.group = name
	return &c
}

func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "DEBUG"
	case l < slog.LevelWarn:
		return "INFO"
	case l < slog.LevelError:
		return "WARN"
	}
	return "ERR"
}

// StdWriter adapts log lines of the form "[LEVEL] component: message", as
// serf and memberlist write them, into records on l. Give it to a
// log.Logger or as a LogOutput; it is safe for concurrent use.
//
// Lines from the libraries named in quiet are demoted from INFO to DEBUG:
// serf's agent logs every RPC client and every event it dispatches, which
// Chiffon already reports as state changes.
func StdWriter(l *slog.Logger, quiet ...string) io.Writer { return &stdWriter{l: l, quiet: quiet} }

// StdWriterExpecting is StdWriter, except that a WARN line for which
// expected(lib, msg) reports true is logged at INFO: a line the library
// writes whenever its owner stops it on purpose, which would alarm an
// operator at WARN. expected must be safe for concurrent use.
func StdWriterExpecting(l *slog.Logger, expected func(lib, msg string) bool, quiet ...string) io.Writer {
	return &stdWriter{l: l, quiet: quiet, expected: expected}
}

type stdWriter struct {
	l        *slog.Logger
	quiet    []string
	expected func(lib, msg string) bool // nil: none
}

func (s *stdWriter) Write(p []byte) (int, error) {
	for line := range strings.SplitSeq(strings.TrimRight(string(p), "\n"), "\n") {
		s.line(line)
	}
	return len(p), nil
}

func (s *stdWriter) line(line string) {
	level := slog.LevelInfo
	if i := strings.IndexByte(line, '['); i >= 0 {
		if j := strings.IndexByte(line[i:], ']'); j > 0 {
			switch line[i+1 : i+j] {
			case "TRACE", "DEBUG":
				level = slog.LevelDebug
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			line = strings.TrimSpace(line[i+j+1:])
		}
	}
	comp := ""
	if k := strings.Index(line, ": "); k > 0 && !strings.ContainsAny(line[:k], " ") {
		comp, line = line[:k], line[k+2:]
	}
	// serf logs every tag change of every member at INFO; with desktops
	// gossiping load each heartbeat that is not a state change.
	if level == slog.LevelInfo && (slices.Contains(s.quiet, comp) || strings.HasPrefix(line, "EventMemberUpdate")) {
		level = slog.LevelDebug
	}
	if level == slog.LevelWarn && s.expected != nil && s.expected(comp, line) {
		level = slog.LevelInfo
	}
	if !s.l.Enabled(context.Background(), level) {
		return
	}
	if comp != "" {
		s.l.Log(context.Background(), level, line, "lib", comp)
		return
	}
	s.l.Log(context.Background(), level, line)
}

// SyncWriter serialises writes to an io.Writer shared by several loggers
// (the nodes of `chiffon dev` write to one terminal), so that lines never
// interleave.
type SyncWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

// NewSyncWriter returns a SyncWriter writing to w.
func NewSyncWriter(w io.Writer) *SyncWriter { return &SyncWriter{w: w} }

func (s *SyncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
