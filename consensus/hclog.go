package consensus

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// levelTrace is the slog level hclog's Trace maps to.
const levelTrace = slog.LevelDebug - 4

// hclogAdapter lets raft, which logs through hclog, write to our slog
// logger with its key/value pairs intact.
type hclogAdapter struct {
	l       *slog.Logger // with implied args
	name    string
	implied []any
	// level is hclog's own filter, shared by derived loggers as hclog does;
	// slog's handler filters too.
	level *atomic.Int32
	// firstElection is true until raft's first "starting election" line,
	// shared by derived loggers (see startupElection).
	firstElection *atomic.Bool
}

var _ hclog.Logger = (*hclogAdapter)(nil)

// newHCLogger adapts l for hclog users, named name.
func newHCLogger(l *slog.Logger, name string) hclog.Logger {
	level := new(atomic.Int32)
	level.Store(int32(hclog.Trace))
	first := new(atomic.Bool)
	first.Store(true)
	return &hclogAdapter{l: l, name: name, level: level, firstElection: first}
}

// electionMsg is what raft logs, at WARN, when a follower hears from no
// leader within its heartbeat timeout and stands for election.
const electionMsg = "heartbeat timeout reached, starting election"

// startupElection reports whether a raft line is the election every node
// starts with: the first electionMsg since the store opened, while the node
// knows of no leader yet (last-leader-id empty). It is expected at each
// start, so it is logged at INFO; an election after a leader was known —
// a leader lost — stays a warning.
func (a *hclogAdapter) startupElection(level hclog.Level, msg string, args []any) bool {
	if level != hclog.Warn || msg != electionMsg {
		return false
	}
	for i := 0; i+1 < len(args); i += 2 {
		if k, _ := args[i].(string); k == "last-leader-id" && fmt.Sprint(args[i+1]) != "" {
			a.firstElection.Store(false)
			return false
		}
	}
	return a.firstElection.CompareAndSwap(true, false)
}

// appendFailedMsg is what raft logs, at ERROR, each time a follower fails
// to store entries the leader sent. The leader resends them at once, so
// while the disk is full it repeats many times a second; persistHealth
// logs the episode once (and its end) instead, and this line is demoted
// to DEBUG.
const appendFailedMsg = "failed to append to logs"

func toSlogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return levelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (a *hclogAdapter) enabled(level hclog.Level) bool {
	min := hclog.Level(a.level.Load())
	if min == hclog.Off || (min != hclog.NoLevel && level < min) {
		return false
	}
	return a.l.Enabled(context.Background(), toSlogLevel(level))
}

// Log implements hclog.Logger.
func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if a.startupElection(level, msg, args) {
		level = hclog.Info
	}
	if msg == appendFailedMsg {
		level = hclog.Debug
	}
	if !a.enabled(level) {
		return
	}
	if a.name != "" {
		args = append([]any{"logger", a.name}, args...)
	}
	a.l.Log(context.Background(), toSlogLevel(level), msg, args...)
}

// Trace and the one-line methods below implement hclog.Logger.
func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }
func (a *hclogAdapter) IsTrace() bool                 { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool                 { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool                  { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool                  { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool                 { return a.enabled(hclog.Error) }
func (a *hclogAdapter) ImpliedArgs() []any            { return a.implied }
func (a *hclogAdapter) Name() string                  { return a.name }
func (a *hclogAdapter) SetLevel(level hclog.Level)    { a.level.Store(int32(level)) }
func (a *hclogAdapter) GetLevel() hclog.Level         { return hclog.Level(a.level.Load()) }

// With implements hclog.Logger.
func (a *hclogAdapter) With(args ...any) hclog.Logger {
	b := *a
	b.implied = append(append([]any(nil), a.implied...), args...)
	b.l = a.l.With(args...)
	return &b
}

// Named implements hclog.Logger: names nest with dots, as in hclog.
func (a *hclogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return a.ResetNamed(name)
}

// ResetNamed implements hclog.Logger.
func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	b := *a
	b.name = name
	return &b
}

// StandardLogger implements hclog.Logger, at Info level whatever opts say.
func (a *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	l := a.l
	if a.name != "" {
		l = l.With("logger", a.name)
	}
	return slog.NewLogLogger(l.Handler(), slog.LevelInfo)
}

// StandardWriter implements hclog.Logger.
func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return a.StandardLogger(opts).Writer()
}
