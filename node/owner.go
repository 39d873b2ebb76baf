package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node/ownerwatch"
	"github.com/chiffon-dev/chiffon/node/worker"
	"github.com/chiffon-dev/chiffon/probe/owner"
)

// OwnerConfig is a desktop's owner policy (issue 13 §1; docs/OPERATIONS.md
// "The owner at the keyboard").
type OwnerConfig struct {
	// Idle is -owner-idle: the desktop takes work only once its owner has
	// been idle this long. 0 ignores the owner: no watcher runs and
	// `chiffon owner` is refused.
	Idle time.Duration
	// Action is -owner-action, what running work does when the owner
	// comes back: worker.OwnerSuspend (default), OwnerRequeue or
	// OwnerFinish.
	Action string
	// Sources is -owner-sources: the measured sources, asked in this
	// order after the state declared by hand: "logind", "input", "tty".
	// The default leaves tty out: every ssh session and terminal counts
	// as the owner there (see OwnerSourceNames).
	Sources []string
	// Root is the file sources' root directory ("" means "/"; tests).
	Root string
	// LogindAddress is the D-Bus address logind is asked on ("" means the
	// system bus; tests).
	LogindAddress string
	// Interval is how often the sources are read (default 1 s).
	Interval time.Duration
}

// OwnerSourceNames are the measured owner sources -owner-sources takes.
var OwnerSourceNames = []string{"logind", "input", "tty"}

// DefaultOwnerConfig returns the documented defaults: offered after 10
// minutes idle, suspend, logind then input devices.
func DefaultOwnerConfig() OwnerConfig {
	return OwnerConfig{Idle: 10 * time.Minute, Action: worker.OwnerSuspend, Sources: []string{"logind", "input"},
		Interval: ownerwatch.DefaultInterval}
}

func (c *OwnerConfig) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	if c.Idle < 0 {
		return bad("-owner-idle: %s; must be 0 (ignore the owner) or more", c.Idle)
	}
	if err := worker.CheckOwnerAction(c.Action); err != nil {
		return bad("%v", err)
	}
	for _, s := range c.Sources {
		if !slices.Contains(OwnerSourceNames, s) {
			return bad("-owner-sources: unknown source %q; allowed: %s", s, strings.Join(OwnerSourceNames, ", "))
		}
	}
	return nil
}

// openOwner builds a desktop's owner watcher (with -owner-idle above 0)
// and reads it once, so that the first tags carry the owner's state. It
// starts no goroutine: startOwner does, once gossip runs.
func (n *Node) openOwner(ctx context.Context) error {
	c := n.cfg.Owner
	if !n.hasRole(gossip.RoleDesktop) || c.Idle <= 0 {
		return nil
	}
	root := c.Root
	if root == "" {
		root = "/"
	}
	n.ownerOverride = &owner.Override{}
	sources := []owner.Source{n.ownerOverride}
	for _, s := range c.Sources {
		switch s {
		case "logind":
			sources = append(sources, owner.NewLogind(owner.LogindConfig{Address: c.LogindAddress}))
		case "input":
			sources = append(sources, owner.NewInputSource(root, nil))
		case "tty":
			sources = append(sources, owner.NewTTYSource(root, nil))
		}
	}
	wc := ownerwatch.Config{Source: owner.NewChain(sources...), Override: n.ownerOverride, Idle: c.Idle,
		Action: c.Action, Interval: c.Interval, Announce: n.ownerChanged, Logger: n.cfg.Logger}
	if n.runner != nil { // a typed nil would not be a nil Workload
		wc.Workload = n.runner
	}
	w, err := ownerwatch.New(wc)
	if err != nil {
		return fmt.Errorf("owner watcher: %w", err)
	}
	n.owner = w
	w.Poll(ctx)
	n.logger.Info("watching the owner", "idle", c.Idle, "action", c.Action, "sources", strings.Join(c.Sources, ","))
	return nil
}

// ownerChanged is the watcher's Announce: it records the state and gossips
// it at once (once gossip runs; before, the first tags carry it).
func (n *Node) ownerChanged(st owner.State, since time.Time) {
	n.mu.Lock()
	n.ownerState, n.ownerSince = string(st), since
	n.mu.Unlock()
	n.pubMu.Lock()
	defer n.pubMu.Unlock()
	if n.gossip == nil {
		return
	}
	if _, err := n.gossip.UpdateInfo(n.info(n.LastSample())); err != nil {
		n.logger.Error("gossiping the owner's state failed", "err", err)
	}
}

// ownerInfo returns the owner state to gossip ("" unknown or not watched).
func (n *Node) ownerInfo() (string, time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ownerState == "" {
		return "", time.Time{}
	}
	return n.ownerState, n.ownerSince
}

// LocalOwner is the local command behind `chiffon owner`.
const LocalOwner = "owner"

// handleOwnerCommand answers `chiffon owner active|idle|auto`: it sets or
// clears the declared state, applies it, and answers the state in force
// ("active", "idle" or "unknown").
func (n *Node) handleOwnerCommand(payload []byte) ([]byte, error) {
	if n.owner == nil {
		return nil, fmt.Errorf("this node does not watch its owner (-owner-idle 0, or not a desktop)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var st owner.State
	switch arg := strings.TrimSpace(string(payload)); arg {
	case "auto":
		st = n.owner.Auto(ctx)
	default:
		want, err := owner.ParseState(arg)
		if err != nil {
			return nil, fmt.Errorf("%v; or auto", err)
		}
		if st, err = n.owner.Set(ctx, want); err != nil {
			return nil, err
		}
	}
	if st == "" {
		return []byte("unknown"), nil
	}
	return []byte(st), nil
}

// closeOwner stops the watcher and closes its sources. Idempotent.
func (n *Node) closeOwner() {
	if n.owner != nil {
		_ = n.owner.Close()
	}
}
