// Package ownerwatch is a desktop's owner policy (issue 13 §1): one
// goroutine reads probe/owner's sources every Interval, derives whether
// the owner is active with the -owner-idle threshold, and on every change
// applies -owner-action to the work runner and announces the new state
// (the node gossips it at once). `chiffon owner active|idle|auto` sets or
// clears the Override through Set, which applies the result before it
// returns.
//
// The states: active (the owner is at the keyboard: no new work starts,
// running work is suspended, handed back or left to finish), idle (idle for
// the threshold, or declared idle), and unknown ("": no source answered —
// no logind session, no input or terminal device — treated as idle, so a
// headless desktop takes work as before).
package ownerwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/chiffon-dev/chiffon/probe/owner"
)

// ErrInvalidConfig is returned by New for an unusable Config.
var ErrInvalidConfig = errors.New("invalid owner watcher config")

// Workload is what the policy steers: the desktop's work runner
// (worker.Runner). OwnerActive applies the action to running work and
// holds new work; OwnerIdle continues suspended work and takes work again.
type Workload interface {
	OwnerActive(action string) (int, error)
	OwnerIdle() int
}

// Config configures a Watcher.
type Config struct {
	// Source is read at every poll: a Chain whose first source is
	// Override, so that a declared state wins.
	Source owner.Source
	// Override is the state declared by hand (Set, Auto).
	Override *owner.Override
	// Idle is -owner-idle: the owner counts as idle after this long
	// without input. It must be positive (0 means no watcher at all).
	Idle time.Duration
	// Action is -owner-action (worker.OwnerSuspend, OwnerRequeue,
	// OwnerFinish), handed to Workload.
	Action string
	// Interval is how often the sources are read (1 s: a change is acted
	// on within about a second, plus the source's own delay).
	Interval time.Duration
	// ReadTimeout bounds one read of the sources.
	ReadTimeout time.Duration
	// Workload is the work runner; nil for a desktop without a handler.
	Workload Workload
	// Announce is called with every new state and when it began, on the
	// watcher's goroutine (or Set's caller), after Workload was told: the
	// node gossips it at once. It must not wait on the watcher.
	Announce func(state owner.State, since time.Time)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives state changes; nil discards them.
	Logger *slog.Logger
}

// DefaultInterval and DefaultReadTimeout are the polling defaults.
const (
	DefaultInterval    = time.Second
	DefaultReadTimeout = 800 * time.Millisecond
)

// Watcher runs the owner policy. New starts nothing; Start starts the
// polling goroutine, which Close stops.
type Watcher struct {
	cfg    Config
	logger *slog.Logger

	mu sync.Mutex // guards state, since, lastErr; held across one poll so that polls are serial
	// state is the derived owner state ("" unknown), since when it began.
	state   owner.State
	since   time.Time
	lastErr string

	stop      chan struct{}
	done      chan struct{}
	startOnce sync.Once
	closeOnce sync.Once
}

// New validates cfg and returns a Watcher that has started nothing.
func New(cfg Config) (*Watcher, error) {
	switch {
	case cfg.Source == nil || cfg.Override == nil:
		return nil, fmt.Errorf("%w: a source and an override are required", ErrInvalidConfig)
	case cfg.Idle <= 0:
		return nil, fmt.Errorf("%w: -owner-idle %s: must be positive (0 turns the owner policy off)", ErrInvalidConfig, cfg.Idle)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, logger: cfg.Logger.With("component", "owner"),
		stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// State returns the owner state ("" unknown) and when it began.
func (w *Watcher) State() (owner.State, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, w.since
}

// Poll reads the sources once and applies a change. The loop calls it
// every Interval; the node calls it once before it starts gossip, so the
// first tags carry the owner's state. After Close it changes nothing.
func (w *Watcher) Poll(ctx context.Context) owner.State {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ReadTimeout)
	defer cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.stop:
		return w.state // closed: the sources may be closed too
	default:
	}
	r, err := w.cfg.Source.Read(ctx)
	next := owner.State("")
	msg := ""
	if err == nil {
		next = r.Owner(w.cfg.Idle)
	} else {
		msg = err.Error()
	}
	if msg != w.lastErr {
		if msg != "" {
			w.logger.Info("no owner source answers; taking work as if the owner were idle", "err", msg)
		}
		w.lastErr = msg
	}
	if next == w.state {
		return next
	}
	prev := w.state
	now := w.cfg.Now()
	w.state, w.since = next, now
	if wl := w.cfg.Workload; wl != nil {
		switch {
		case next == owner.StateActive:
			n, err := wl.OwnerActive(w.cfg.Action)
			if err != nil {
				w.logger.Error("applying the owner action failed", "action", w.cfg.Action, "err", err)
			}
			w.logger.Info("owner active: taking no new work", "source", r.Source, "action", w.cfg.Action, "handlers", n)
		case prev == owner.StateActive:
			n := wl.OwnerIdle()
			w.logger.Info("owner gone: taking work again", "state", stateName(next), "source", r.Source, "continued", n)
		default:
			w.logger.Info("owner state", "state", stateName(next), "source", r.Source)
		}
	} else {
		w.logger.Info("owner state", "state", stateName(next), "source", r.Source)
	}
	if w.cfg.Announce != nil {
		w.cfg.Announce(next, now)
	}
	return next
}

func stateName(s owner.State) string {
	if s == "" {
		return "unknown"
	}
	return string(s)
}

// Set declares the owner's state by hand (`chiffon owner active|idle`)
// and applies it before it returns.
func (w *Watcher) Set(ctx context.Context, st owner.State) (owner.State, error) {
	if err := w.cfg.Override.Set(st, w.cfg.Now()); err != nil {
		return "", err
	}
	return w.Poll(ctx), nil
}

// Auto withdraws a declared state (`chiffon owner auto`): the measured
// sources decide again, at once.
func (w *Watcher) Auto(ctx context.Context) owner.State {
	w.cfg.Override.Clear()
	return w.Poll(ctx)
}

// Start starts the polling goroutine. It is a no-op after the first call.
func (w *Watcher) Start() {
	w.startOnce.Do(func() { go w.loop() })
}

func (w *Watcher) loop() {
	defer close(w.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.Poll(ctx)
	}
}

// Close stops the goroutine (if started), waits for it, and closes the
// source if it is an io.Closer (the chain's D-Bus connection). It is
// idempotent.
func (w *Watcher) Close() error {
	var err error
	w.closeOnce.Do(func() {
		close(w.stop)
		started := true
		w.startOnce.Do(func() { started = false })
		if started {
			<-w.done
		}
		if c, ok := w.cfg.Source.(interface{ Close() error }); ok {
			err = c.Close()
		}
	})
	return err
}
