// Package owner tells whether a desktop's owner is at the keyboard: how long
// since their last keyboard or mouse input, read from one of several
// sources behind the one Source interface.
//
//   - Logind asks systemd-logind over D-Bus for the IdleHint and
//     IdleSinceHint of the active graphical sessions.
//   - NewInputSource and NewTTYSource read the access times of input device
//     nodes (/dev/input/event*) and terminals (/dev/tty[0-9]*, /dev/pts/*).
//   - Override is a state declared by hand (`chiffon owner active|idle`).
//   - Chain asks its sources in order and takes the first that answers.
//
// What each source reads, the permissions it needs and how the node will
// use it are in DESIGN.md beside this file. The package is a leaf: stdlib
// and godbus only. node/ownerwatch applies the policy on top of it.
package owner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Sentinel errors. Every error this package returns for these conditions
// wraps one of them; match with errors.Is.
var (
	// ErrNoData means a source works but has nothing to say on this
	// machine: no active graphical session, no input device or terminal
	// nodes, no state declared by hand. A Chain moves on to its next source.
	ErrNoData = errors.New("owner source has no data")

	// ErrNoSource means no source of a Chain answered; the error also
	// carries each source's own error.
	ErrNoSource = errors.New("no owner source answered")

	// ErrInvalidState means a string is neither "active" nor "idle".
	ErrInvalidState = errors.New("invalid owner state")

	// ErrClosed means Read was called after Close.
	ErrClosed = errors.New("owner source closed")
)

// State is the owner's state as the registry keeps it and the CLI declares
// it. The zero value means unknown (not declared).
type State string

// The owner states.
const (
	StateActive State = "active"
	StateIdle   State = "idle"
)

// ParseState parses "active" or "idle" (any case, surrounding blanks
// ignored), as `chiffon owner active|idle` takes them.
func ParseState(s string) (State, error) {
	switch st := State(strings.ToLower(strings.TrimSpace(s))); st {
	case StateActive, StateIdle:
		return st, nil
	}
	return "", fmt.Errorf("%w: %q (want %q or %q)", ErrInvalidState, s, StateActive, StateIdle)
}

// Reading is one source's answer.
type Reading struct {
	// Source names the source that answered ("logind", "input", "tty",
	// "manual").
	Source string

	// Idle is how long the owner had been idle when the source was read:
	// zero while they are active, never negative.
	Idle time.Duration

	// LastInput is when the owner last gave input as far as the source can
	// tell: for logind, the time of reading while a session is active and
	// its IdleSinceHint once idle; for manual, when the state was declared.
	LastInput time.Time

	// Declared is the state set by hand, or "" for a measured reading. A
	// declared state holds whatever the idle threshold (see Owner).
	Declared State
}

// Owner is the state a policy with the given idle threshold derives from
// r: a declared state as declared; otherwise idle once Idle reaches
// threshold. A threshold of 0 ignores the owner (always idle), as the
// node's -owner-idle 0 will.
func (r Reading) Owner(threshold time.Duration) State {
	switch {
	case threshold <= 0:
		return StateIdle
	case r.Declared != "":
		return r.Declared
	case r.Idle >= threshold:
		return StateIdle
	}
	return StateActive
}

// Source is one way of learning how long the owner has been idle.
// Implementations are safe for concurrent use.
type Source interface {
	// Name is the source's name, as in Reading.Source.
	Name() string
	// Read reads the source once. It returns an error wrapping ErrNoData
	// when the source has nothing to say on this machine.
	Read(ctx context.Context) (Reading, error)
}

var (
	_ Source = (*Chain)(nil)
	_ Source = (*Override)(nil)
)

// idleSince is now−last, never negative (a clock stepped back, a file time
// set in the future).
func idleSince(now, last time.Time) time.Duration {
	if d := now.Sub(last); d > 0 {
		return d
	}
	return 0
}

// Chain reads its sources in order and returns the first answer: put an
// Override first so that a declared state wins, then logind, then the
// device sources.
type Chain struct {
	sources []Source
}

// NewChain returns a Chain over sources, asked in the order given.
func NewChain(sources ...Source) *Chain {
	return &Chain{sources: append([]Source(nil), sources...)}
}

// Name is "chain"; a Reading names the source that actually answered.
func (c *Chain) Name() string { return "chain" }

// Read returns the first source's reading that comes without error. When
// none answers it returns an error wrapping ErrNoSource and every source's
// error (so errors.Is(err, ErrNoData) holds when one had no data). It stops
// early when ctx is done.
func (c *Chain) Read(ctx context.Context) (Reading, error) {
	errs := []error{ErrNoSource}
	for _, s := range c.sources {
		if err := ctx.Err(); err != nil {
			return Reading{}, fmt.Errorf("read owner sources: %w", err)
		}
		r, err := s.Read(ctx)
		if err == nil {
			return r, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", s.Name(), err))
	}
	return Reading{}, errors.Join(errs...)
}

// Close closes every source that is an io.Closer and returns their errors
// joined.
func (c *Chain) Close() error {
	var errs []error
	for _, s := range c.sources {
		if cl, ok := s.(io.Closer); ok {
			errs = append(errs, cl.Close())
		}
	}
	return errors.Join(errs...)
}

// Override is the owner's state declared by hand: kiosks, scripts,
// screensavers and tests use it through `chiffon owner active|idle`.
// The zero value has nothing declared.
type Override struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex // guards state and since
	state State
	since time.Time
}

// Set declares st, as of at. It returns ErrInvalidState for anything but
// StateActive or StateIdle.
func (o *Override) Set(st State, at time.Time) error {
	if st != StateActive && st != StateIdle {
		return fmt.Errorf("%w: %q", ErrInvalidState, st)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.state, o.since = st, at
	return nil
}

// Clear withdraws the declared state; the measured sources decide again.
func (o *Override) Clear() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.state, o.since = "", time.Time{}
}

// Get returns the declared state and when it was set; "" when none.
func (o *Override) Get() (State, time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state, o.since
}

// Name is "manual".
func (o *Override) Name() string { return "manual" }

// Read returns the declared state with Declared set: idle for as long as
// it has been declared idle, or active (Idle 0) since it was declared
// active. Without a declared state it returns ErrNoData.
func (o *Override) Read(context.Context) (Reading, error) {
	st, since := o.Get()
	if st == "" {
		return Reading{}, fmt.Errorf("%w: no state declared by hand", ErrNoData)
	}
	r := Reading{Source: o.Name(), Declared: st, LastInput: since}
	if st == StateIdle {
		r.Idle = idleSince(nowOf(o.Now), since)
	}
	return r, nil
}

func nowOf(now func() time.Time) time.Time {
	if now == nil {
		return time.Now()
	}
	return now()
}
