package worker

import (
	"errors"
	"fmt"
	"syscall"
)

// The owner policy (issue 13 §1): while the desktop's owner is active the
// runner starts no handler, and applies the node's -owner-action to the
// handlers that run: suspend stops their process groups (SIGSTOP) until
// the owner is idle again (SIGCONT); requeue kills them and hands the
// items back (StatusYielded), which the leader places again without
// counting the attempt; finish lets them run to the end. Items that reach
// the runner meanwhile (sent before the leader heard of the owner) are
// handed back unstarted.

// Owner actions (-owner-action).
const (
	OwnerSuspend = "suspend"
	OwnerRequeue = "requeue"
	OwnerFinish  = "finish"
)

// CheckOwnerAction says what is wrong with an -owner-action value.
func CheckOwnerAction(action string) error {
	switch action {
	case OwnerSuspend, OwnerRequeue, OwnerFinish:
		return nil
	}
	return fmt.Errorf("-owner-action: %q; want %s, %s or %s", action, OwnerSuspend, OwnerRequeue, OwnerFinish)
}

// ownerHold is the policy in force: active is whether the owner is at the
// keyboard, action what the runner does to running handlers meanwhile.
type ownerHold struct {
	active bool
	action string
}

// OwnerActive tells the runner that the desktop's owner is at the
// keyboard: from now on no handler starts (items are handed back
// unstarted), and running handlers are suspended, stopped and handed
// back, or left to finish, as action (OwnerSuspend, OwnerRequeue,
// OwnerFinish) says. It returns how many running handlers it suspended or
// stopped. Calling it again with the owner still active applies the new
// action to what runs now (a suspended handler stays suspended).
func (r *Runner) OwnerActive(action string) (int, error) {
	if err := CheckOwnerAction(action); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.owner = ownerHold{active: true, action: action}
	n := 0
	for _, e := range r.work {
		if e.state.Status != StatusRunning {
			continue
		}
		switch action {
		case OwnerSuspend:
			if e.pgid > 0 && !e.stopped {
				r.signalLocked(e, syscall.SIGSTOP)
				n++
			}
		case OwnerRequeue:
			if !e.yield {
				e.yield = true
				e.cancel() // kills the process group; run records StatusYielded
				r.logger.Info("the owner is active; stopping the work to hand it back", "work-id", e.a.WorkID, "attempt", e.a.Attempt)
				n++
			}
		}
	}
	return n, nil
}

// OwnerIdle tells the runner that the owner has left: suspended handlers
// continue (SIGCONT) and new items start again. It returns how many
// handlers it continued.
func (r *Runner) OwnerIdle() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.owner = ownerHold{}
	n := 0
	for _, e := range r.work {
		if e.stopped {
			r.signalLocked(e, syscall.SIGCONT)
			n++
		}
	}
	return n
}

// Suspended returns the work IDs whose handlers are stopped for the owner.
func (r *Runner) Suspended() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, e := range r.work {
		if e.stopped {
			out = append(out, id)
		}
	}
	return out
}

// holding reports whether the owner is active (no handler may start).
func (r *Runner) holding() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.owner.active
}

// handlerStarted records the process group of e's handler, and stops it at
// once if the owner became active (suspend) while it was starting.
func (r *Runner) handlerStarted(e *entry, pgid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.pgid = pgid
	if r.owner.active && r.owner.action == OwnerSuspend {
		r.signalLocked(e, syscall.SIGSTOP)
	}
}

// handlerDone forgets e's process group once its handler is over, turns
// the result of a handler stopped for the owner into StatusYielded, and
// continues a process that was stopped as it answered (a persistent
// handler goes back to the pool and must not stay stopped).
func (r *Runner) handlerDone(e *entry, res *State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.stopped {
		r.signalLocked(e, syscall.SIGCONT)
	}
	e.pgid = 0
	if e.yield && res.Status != StatusSucceeded {
		res.Status, res.ExitCode = StatusYielded, -1
		res.Error = "stopped: the desktop's owner became active (-owner-action requeue)"
	}
}

// signalLocked sends sig to e's process group and records whether it is
// stopped. r.mu is held.
func (r *Runner) signalLocked(e *entry, sig syscall.Signal) {
	if e.pgid <= 0 {
		return
	}
	if err := syscall.Kill(-e.pgid, sig); err != nil {
		if !errors.Is(err, syscall.ESRCH) { // ESRCH: the group is gone (killed, dropped): nothing to stop or continue
			r.logger.Warn("signalling the work handler failed", "work-id", e.a.WorkID, "signal", sig, "err", err)
		}
		e.stopped = false
		return
	}
	e.stopped = sig == syscall.SIGSTOP
	verb := "suspended"
	if !e.stopped {
		verb = "continued"
	}
	r.logger.Info("work handler "+verb+" for the owner", "work-id", e.a.WorkID, "attempt", e.a.Attempt, "pgid", e.pgid)
}
