// Package worker is the desktop side of Chiffon's work delivery: a Runner
// that runs the node's work handler command for each assignment (a process
// per item, or long-lived handlers that take items over a line protocol:
// persistent.go), the small HTTP API through which the raft leader hands
// work over and collects results, and the Client the leader uses for it.
//
// The protocol is driven by the leader alone (see node/dispatch's
// DESIGN.md): it POSTs an assignment, long-polls GET until the result is
// there, records the result through raft, then DELETEs it. Every call is
// idempotent on (work_id, attempt), so a new leader simply repeats them.
// The desktop keeps results in memory: a desktop that restarts forgets its
// work, the leader sees 404 and places the work again.
//
// Every assignment is fenced: it carries its attempt number and a lease
// from the leader (lease_expires_at, the leader's clock). The runner never
// starts an attempt whose lease has expired by its own clock (checked when
// the POST is read, which may be long after it was sent if this process was
// frozen, and again right before the handler starts, after any wait for a
// slot), nor one that is superseded: a higher attempt of the same work_id
// has been seen, or the leader dropped it (DELETE ...?drop=1). A handler
// that has started is not stopped by its lease: it runs on until it
// finishes, or until the leader drops it.
//
// With TLS material (Config.TLS) the endpoint is HTTPS with mutual TLS and
// runs only requests from an orchestrator's server certificate; the
// Client checks in turn that the desktop's certificate names the node the
// work is for (http.go).
package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chiffon-dev/chiffon/internal/logging"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// Sentinel errors.
var (
	// ErrInvalidConfig is returned by New for an unusable Config.
	ErrInvalidConfig = errors.New("invalid work runner config")
	// ErrClosed is returned by Submit after Close (HTTP 503).
	ErrClosed = errors.New("work runner closed")
	// ErrStaleAttempt is returned by Submit for an attempt older than the
	// one the runner already has for that work_id (HTTP 409).
	ErrStaleAttempt = errors.New("stale work attempt")
	// ErrUnknownWork means the runner has no such work_id and attempt
	// (HTTP 404): never given, forgotten, or lost in a restart.
	ErrUnknownWork = errors.New("unknown work")
	// ErrBadAssignment is returned for an assignment without a work_id or
	// attempt, or with a payload that is not JSON (HTTP 400).
	ErrBadAssignment = errors.New("bad assignment")
	// ErrLeaseExpired is returned by Submit for an assignment whose lease
	// had expired when it arrived (HTTP 410): it is never started, and the
	// leader places the work again.
	ErrLeaseExpired = errors.New("work lease expired")
)

// Handler modes (Config.HandlerMode, -work-handler-mode).
const (
	// HandlerExec runs the handler once per work item: payload on stdin,
	// stdout as the output, exit code as the status.
	HandlerExec = "exec"
	// HandlerPersistent keeps up to Concurrency handler processes running
	// and hands each one item at a time as one JSON line on stdin, reading
	// one JSON line back (see persistent.go and docs/API.md).
	HandlerPersistent = "persistent"
)

// CheckHandlerMode says what is wrong with a -work-handler-mode value, or
// returns nil for HandlerExec, HandlerPersistent and "" (exec).
func CheckHandlerMode(mode string) error {
	switch mode {
	case HandlerExec, HandlerPersistent, "":
		return nil
	}
	return fmt.Errorf("-work-handler-mode: %q; want %s or %s", mode, HandlerExec, HandlerPersistent)
}

// Config configures a Runner.
type Config struct {
	// Handler is the command run for each work item, with `sh -c`
	// (-work-handler). Required: a desktop without one takes no work.
	Handler string
	// HandlerMode is HandlerExec (a process per item; "" means the same)
	// or HandlerPersistent (long-lived processes speaking the lines-v1
	// protocol) (-work-handler-mode).
	HandlerMode string
	// Concurrency is how many handlers run at once (-work-concurrency);
	// more assignments wait in a queue. The node advertises it as its work
	// slots, so the leader does not normally send more.
	Concurrency int
	// Timeout bounds one run (-work-timeout); the handler's whole process
	// group is killed when it expires. In persistent mode it includes
	// waiting for a process to start, so an item that starts a process
	// pays for the handler's start-up (loading a model, say).
	Timeout time.Duration
	// OutputLimit caps the stdout kept as the result; the rest is dropped.
	// In persistent mode it caps the answer's output, and an answer line
	// may be at most OutputLimit + 64 KiB long.
	OutputLimit int
	// KeepFinished is how long a result nobody collected is kept.
	KeepFinished time.Duration
	// MaxAssignmentBytes caps an assignment's HTTP body.
	MaxAssignmentBytes int64
	// Token, when set, must be presented as "Authorization: Bearer TOKEN"
	// (the cluster's token).
	Token string
	// TLS, when set, is the desktop's certificate and the cluster CA:
	// Listener serves HTTPS with it and Handler runs only requests from a
	// peer holding a server (orchestrator) certificate of TLS.Domain. It
	// needs the CA (-tls-ca) to verify that peer.
	TLS *tlsutil.Bundle
	// Env is added to the handler's environment (after the node's own).
	Env []string
	// Logger receives the runner's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: a process per item, one at a time,
// 1 h timeout, 1 MiB of output, results kept 1 h.
func DefaultConfig() Config {
	return Config{HandlerMode: HandlerExec, Concurrency: 1, Timeout: time.Hour, OutputLimit: 1 << 20,
		KeepFinished: time.Hour, MaxAssignmentBytes: 2 << 20}
}

// Status values of a State.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	// StatusExpired: the lease ran out while the item waited for a slot;
	// the handler was never started. Final, like succeeded and failed.
	StatusExpired = "expired"
	// StatusYielded: the desktop's owner is active, and the item was
	// handed back (owner.go): its handler was stopped (-owner-action
	// requeue) or never started. Final; the leader places the work again
	// without counting the attempt.
	StatusYielded = "yielded"
)

// Assignment is one work item handed to the desktop (POST /v1/work).
type Assignment struct {
	WorkID string `json:"work_id"`
	// Attempt numbers the placement; a higher attempt replaces a lower one.
	Attempt int `json:"attempt"`
	// GPUIndex is the GPU to use, exported as CUDA_VISIBLE_DEVICES in exec
	// mode and sent as gpu_index in persistent mode; -1 for none known (the
	// variable is then left as the node has it).
	GPUIndex int `json:"gpu_index"`
	// Payload is written to the handler's stdin (exec) or sent as the
	// request's payload (persistent).
	Payload json.RawMessage `json:"payload,omitempty"`
	// LeaseExpiresAt is the leader's deadline for starting this attempt, in
	// the leader's clock: the runner refuses to start it at or after this
	// time by its own clock (see the package comment; the clocks are
	// assumed to agree within one lease). Zero: no lease.
	LeaseExpiresAt time.Time `json:"lease_expires_at,omitzero"`
}

// expired reports whether a's lease has run out at now.
func (a Assignment) expired(now time.Time) bool {
	return !a.LeaseExpiresAt.IsZero() && !now.Before(a.LeaseExpiresAt)
}

// State is where one assignment stands on the desktop.
type State struct {
	WorkID     string    `json:"work_id"`
	Attempt    int       `json:"attempt"`
	Status     string    `json:"status"`
	ExitCode   int       `json:"exit_code"`
	Output     string    `json:"output,omitempty"`
	Truncated  bool      `json:"output_truncated,omitempty"`
	Error      string    `json:"error,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// Done reports whether the run has finished.
func (s State) Done() bool {
	return s.Status == StatusSucceeded || s.Status == StatusFailed || s.Status == StatusExpired || s.Status == StatusYielded
}

// entry is one assignment's life in the runner.
type entry struct {
	a      Assignment
	cancel context.CancelFunc
	// state and changed are guarded by Runner.mu; changed is closed and
	// replaced on every change of state.
	state   State
	changed chan struct{}
	// pgid is the process group of the running handler (0 before it
	// started); stopped says it was sent SIGSTOP for the owner; yield
	// that it is being stopped to be handed back. Guarded by Runner.mu.
	pgid    int
	stopped bool
	yield   bool
}

// executor runs the handler for one assignment and returns its result
// (Status, ExitCode, Output, Truncated, Error). Runner.run calls execute
// with a slot of Runner.sem held, so at most Concurrency calls run at once.
// execute calls started with the process group of the handler that serves
// the item once it runs (the owner policy stops and continues it).
// Runner.Close calls close once no call runs any more (perhaps more than
// once): it releases what the executor keeps between calls.
type executor interface {
	execute(ctx context.Context, a Assignment, started func(pgid int)) State
	close()
}

var (
	_ executor = (*execExecutor)(nil)
	_ executor = (*persistentExecutor)(nil)
)

// Runner runs the work handler for assignments. Create it with New; it
// runs work from the first Submit until Close.
type Runner struct {
	cfg    Config
	logger *slog.Logger
	ex     executor      // exec or persistent mode, chosen by New
	sem    chan struct{} // one token per running handler
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup // every run and the janitor
	// refusals limits the refused-request log lines to one a minute per
	// remote host and reason: anyone who reaches the port can send them.
	refusals *logging.Limiter

	mu sync.Mutex
	// work is the assignments by work_id; closed refuses new ones. Both
	// guarded by mu.
	work    map[string]*entry
	closed  bool
	started bool
	// fenced is, by work_id, the highest attempt that is over here
	// (forgotten or dropped) and when: that attempt and lower ones are
	// refused as stale. The janitor forgets a fence after KeepFinished.
	// Guarded by mu.
	fenced map[string]fence
	// owner is the owner policy in force (owner.go). Guarded by mu.
	owner ownerHold
}

// fence is a work_id's highest attempt that must never start here again.
type fence struct {
	attempt int
	at      time.Time
}

// New validates cfg and returns a Runner. It starts nothing.
func New(cfg Config) (*Runner, error) {
	switch {
	case cfg.Handler == "":
		return nil, fmt.Errorf("%w: -work-handler: empty", ErrInvalidConfig)
	case cfg.Concurrency < 1:
		return nil, fmt.Errorf("%w: -work-concurrency: %d; must be at least 1", ErrInvalidConfig, cfg.Concurrency)
	case cfg.Timeout <= 0:
		return nil, fmt.Errorf("%w: -work-timeout: %s; must be positive", ErrInvalidConfig, cfg.Timeout)
	case cfg.OutputLimit <= 0 || cfg.KeepFinished <= 0 || cfg.MaxAssignmentBytes <= 0:
		return nil, fmt.Errorf("%w: output limit, keep-finished and assignment size must be positive", ErrInvalidConfig)
	case cfg.TLS != nil && cfg.TLS.Roots == nil:
		return nil, fmt.Errorf("%w: the work endpoint serves TLS but has no cluster CA (-tls-ca) to verify the orchestrator that delivers work", ErrInvalidConfig)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "work-runner")
	if err := CheckHandlerMode(cfg.HandlerMode); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	var ex executor = &execExecutor{cfg: cfg}
	if cfg.HandlerMode == HandlerPersistent {
		ex = newPersistentExecutor(cfg, logger)
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Runner{cfg: cfg, logger: logger, ex: ex, sem: make(chan struct{}, cfg.Concurrency),
		ctx: ctx, stop: stop, work: map[string]*entry{}, fenced: map[string]fence{},
		refusals: logging.NewLimiter(time.Minute, 10_000, nil)}, nil
}

// Slots is the number of handlers that may run at once: what the node
// advertises as its work slots.
func (r *Runner) Slots() int { return r.cfg.Concurrency }

// Submit hands an assignment to the runner. It is idempotent: the same
// work_id and attempt returns the existing state (created false); a higher
// attempt cancels and replaces a lower one; a lower attempt, or one that
// was forgotten or dropped here, fails with ErrStaleAttempt; a new
// assignment whose lease has expired fails with ErrLeaseExpired.
func (r *Runner) Submit(a Assignment) (st State, created bool, err error) {
	if a.WorkID == "" || a.Attempt < 1 {
		return State{}, false, fmt.Errorf("%w: work_id and attempt >= 1 required", ErrBadAssignment)
	}
	if len(a.Payload) > 0 && !json.Valid(a.Payload) {
		return State{}, false, fmt.Errorf("%w: payload is not JSON", ErrBadAssignment)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return State{}, false, ErrClosed
	}
	if !r.started {
		r.started = true
		r.wg.Add(1)
		go r.janitor()
	}
	if old, ok := r.work[a.WorkID]; ok {
		switch {
		case old.a.Attempt == a.Attempt:
			return old.state, false, nil
		case old.a.Attempt > a.Attempt:
			return old.state, false, fmt.Errorf("%w: have attempt %d of %s, got %d", ErrStaleAttempt, old.a.Attempt, a.WorkID, a.Attempt)
		}
	}
	if f, ok := r.fenced[a.WorkID]; ok && f.attempt >= a.Attempt {
		return State{}, false, fmt.Errorf("%w: attempt %d of %s is over here (superseded or forgotten), got %d",
			ErrStaleAttempt, f.attempt, a.WorkID, a.Attempt)
	}
	if now := time.Now(); a.expired(now) {
		r.logger.Warn("refused an assignment whose lease had expired (was this process frozen?)", "work-id", a.WorkID,
			"attempt", a.Attempt, "lease-expires-at", a.LeaseExpiresAt, "late-by", now.Sub(a.LeaseExpiresAt).Round(time.Millisecond))
		return State{}, false, fmt.Errorf("%w: attempt %d of %s expired at %s", ErrLeaseExpired, a.Attempt, a.WorkID,
			a.LeaseExpiresAt.Format(time.RFC3339Nano))
	}
	if old, ok := r.work[a.WorkID]; ok {
		old.cancel()
		r.fenceLocked(a.WorkID, old.a.Attempt)
		r.logger.Info("newer attempt replaces the running one", "work-id", a.WorkID, "old", old.a.Attempt, "new", a.Attempt)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	e := &entry{a: a, cancel: cancel, changed: make(chan struct{}),
		state: State{WorkID: a.WorkID, Attempt: a.Attempt, Status: StatusQueued}}
	r.work[a.WorkID] = e
	r.wg.Add(1)
	go r.run(ctx, e)
	return e.state, true, nil
}

// Get returns the state of workID's attempt (any attempt when attempt is 0).
func (r *Runner) Get(workID string, attempt int) (State, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.lookupLocked(workID, attempt)
	if !ok {
		return State{}, false
	}
	return e.state, true
}

func (r *Runner) lookupLocked(workID string, attempt int) (*entry, bool) {
	e, ok := r.work[workID]
	if !ok || (attempt != 0 && e.a.Attempt != attempt) {
		return nil, false
	}
	return e, true
}

// Wait blocks until workID's attempt has a status other than notStatus
// (or has finished), or until ctx ends, and returns its state then. It is
// the long poll behind GET /v1/work/{id}?wait=.
func (r *Runner) Wait(ctx context.Context, workID string, attempt int, notStatus string) (State, error) {
	for {
		r.mu.Lock()
		e, ok := r.lookupLocked(workID, attempt)
		if !ok {
			r.mu.Unlock()
			return State{}, ErrUnknownWork
		}
		st, changed := e.state, e.changed
		r.mu.Unlock()
		if st.Status != notStatus || st.Done() {
			return st, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return st, nil // the caller sees no change, as with a timeout
		}
	}
}

// Forget drops a finished result once the leader has recorded it. A
// running attempt is not forgotten (the leader forgets only results). The
// attempt stays fenced: a late copy of its assignment is refused.
func (r *Runner) Forget(workID string, attempt int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.lookupLocked(workID, attempt); ok && e.state.Done() {
		delete(r.work, workID)
		r.fenceLocked(workID, e.a.Attempt)
	}
}

// Drop is the leader saying that attempt (>= 1) of workID is superseded:
// a queued one never starts, a running handler is killed, and the attempt
// and lower ones are refused from now on. A higher attempt held here is
// left alone.
func (r *Runner) Drop(workID string, attempt int) {
	if attempt < 1 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.work[workID]; ok && e.a.Attempt <= attempt {
		e.cancel()
		delete(r.work, workID)
		if !e.state.Done() {
			r.logger.Info("dropped a superseded attempt", "work-id", workID, "attempt", e.a.Attempt, "status", e.state.Status)
		}
	}
	r.fenceLocked(workID, attempt)
}

// fenceLocked records that attempt of workID is over here. r.mu is held.
func (r *Runner) fenceLocked(workID string, attempt int) {
	if f, ok := r.fenced[workID]; !ok || f.attempt < attempt {
		r.fenced[workID] = fence{attempt: attempt, at: time.Now()}
	}
}

// List returns the state of every assignment the runner holds, in no
// particular order: the leader's probe of an unreachable desktop, which
// also tells it which superseded attempts to drop.
func (r *Runner) List() []State {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]State, 0, len(r.work))
	for _, e := range r.work {
		out = append(out, e.state)
	}
	return out
}

// Close stops taking work, kills every running handler's process group
// (and, in persistent mode, the idle handlers too) and waits for them. It
// is idempotent.
func (r *Runner) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.stop()
	r.wg.Wait()
	// No run is left: the executor may drop what it keeps between runs.
	r.ex.close()
	return nil
}

func (r *Runner) setState(e *entry, f func(*State)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&e.state)
	close(e.changed)
	e.changed = make(chan struct{})
}

// run waits for a slot, runs the handler and records the result.
func (r *Runner) run(ctx context.Context, e *entry) {
	defer r.wg.Done()
	defer e.cancel()
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		r.setState(e, func(s *State) {
			s.Status, s.ExitCode, s.Error, s.FinishedAt = StatusFailed, -1, "cancelled before it started", time.Now()
		})
		return
	}
	defer func() { <-r.sem }()
	started := time.Now()
	// The fence, right before the start: the slot may have come after the
	// lease (queued behind others), or the leader may have moved on.
	switch {
	case ctx.Err() != nil:
		r.setState(e, func(s *State) {
			s.Status, s.ExitCode, s.Error, s.FinishedAt = StatusFailed, -1, "cancelled before it started", started
		})
		return
	case e.a.expired(started):
		r.logger.Warn("lease expired before the work could start; not starting it", "work-id", e.a.WorkID,
			"attempt", e.a.Attempt, "lease-expires-at", e.a.LeaseExpiresAt)
		r.setState(e, func(s *State) {
			s.Status, s.ExitCode, s.FinishedAt = StatusExpired, -1, started
			s.Error = fmt.Sprintf("lease expired at %s before a slot was free; not started", e.a.LeaseExpiresAt.Format(time.RFC3339Nano))
		})
		return
	case r.holding():
		r.logger.Info("the owner is active; handing the work back unstarted", "work-id", e.a.WorkID, "attempt", e.a.Attempt)
		r.setState(e, func(s *State) {
			s.Status, s.ExitCode, s.FinishedAt = StatusYielded, -1, started
			s.Error = "not started: the desktop's owner is active"
		})
		return
	}
	r.setState(e, func(s *State) { s.Status, s.StartedAt = StatusRunning, started })
	res := r.ex.execute(ctx, e.a, func(pgid int) { r.handlerStarted(e, pgid) })
	res.WorkID, res.Attempt, res.StartedAt, res.FinishedAt = e.a.WorkID, e.a.Attempt, started, time.Now()
	r.handlerDone(e, &res)
	// A failure is worth a line; a success is routine (debug) at hundreds
	// of items a second.
	level := slog.LevelDebug
	if res.Status != StatusSucceeded {
		level = slog.LevelInfo
	}
	r.logger.Log(context.Background(), level, "work finished", "work-id", e.a.WorkID, "attempt", e.a.Attempt,
		"status", res.Status, "exit-code", res.ExitCode, "reason", res.Error, "took", res.FinishedAt.Sub(started).Round(time.Millisecond))
	r.setState(e, func(s *State) { *s = res })
}

// execExecutor is the exec handler mode: a process per work item.
type execExecutor struct {
	cfg Config
}

func (*execExecutor) close() {}

// execute runs the handler once: payload on stdin, stdout (capped) as the
// output, exit code as the status. The handler runs in its own process
// group, killed as a whole on timeout or cancellation.
func (x *execExecutor) execute(ctx context.Context, a Assignment, started func(pgid int)) State {
	ctx, cancel := context.WithTimeout(ctx, x.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", x.cfg.Handler)
	cmd.Stdin = bytes.NewReader(a.Payload)
	stdout := &capWriter{limit: x.cfg.OutputLimit}
	stderr := &tailWriter{limit: stderrTail}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(os.Environ(), x.cfg.Env...)
	cmd.Env = append(cmd.Env, "CHIFFON_WORK_ID="+a.WorkID, "CHIFFON_WORK_ATTEMPT="+strconv.Itoa(a.Attempt))
	if a.GPUIndex >= 0 {
		cmd.Env = append(cmd.Env, "CUDA_VISIBLE_DEVICES="+strconv.Itoa(a.GPUIndex))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Children that keep stdout open must not hold the result back.
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Start()
	if err == nil {
		started(cmd.Process.Pid) // Setpgid: the group's ID is the leader's PID
		err = cmd.Wait()
	}
	if cmd.Process != nil {
		// Leave no orphans behind: the group goes with its leader.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	st := State{Output: stdout.String(), Truncated: stdout.truncated, ExitCode: -1}
	if cmd.ProcessState != nil {
		st.ExitCode = cmd.ProcessState.ExitCode()
	}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		st.Status, st.ExitCode, st.Error = StatusFailed, -1, ctxReason(ctx, x.cfg.Timeout)
	case err == nil:
		st.Status = StatusSucceeded
	case errors.As(err, &exitErr):
		st.Status = StatusFailed
		st.Error = fmt.Sprintf("handler exited with %s", exitErr.ProcessState)
	default:
		st.Status, st.Error = StatusFailed, fmt.Sprintf("run handler: %v", err)
	}
	if st.Status == StatusFailed && stderr.Len() > 0 {
		st.Error += "; stderr: " + stderr.String()
	}
	return st
}

// ctxReason says why ctx, an execute's context bounded by timeout, ended.
func ctxReason(ctx context.Context, timeout time.Duration) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Sprintf("timed out after %s", timeout)
	}
	return "cancelled"
}

// janitor forgets results nobody collected within KeepFinished.
func (r *Runner) janitor() {
	defer r.wg.Done()
	t := time.NewTicker(max(r.cfg.KeepFinished/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case now := <-t.C:
			r.mu.Lock()
			for id, e := range r.work {
				if e.state.Done() && now.Sub(e.state.FinishedAt) > r.cfg.KeepFinished {
					delete(r.work, id)
				}
			}
			for id, f := range r.fenced {
				if now.Sub(f.at) > r.cfg.KeepFinished {
					delete(r.fenced, id)
				}
			}
			r.mu.Unlock()
		}
	}
}

// capWriter keeps the first limit bytes and drops the rest. (It must not
// embed bytes.Buffer: io.Copy would use the buffer's ReadFrom and bypass
// the cap.)
type capWriter struct {
	buf       bytes.Buffer
	limit     int
	truncated bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.limit - w.buf.Len(); room < len(p) {
		w.truncated = true
		if room > 0 {
			w.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return w.buf.Write(p)
}

func (w *capWriter) String() string { return w.buf.String() }

// stderrTail is how much of a handler's stderr a failed item's error keeps.
const stderrTail = 4096

// tailWriter keeps the last limit bytes. It is safe for concurrent use: a
// persistent handler's stderr is read while the process still writes it.
type tailWriter struct {
	mu    sync.Mutex // guards buf
	buf   bytes.Buffer
	limit int
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if over := w.buf.Len() - w.limit; over > 0 {
		w.buf.Next(over)
	}
	return len(p), nil
}

func (w *tailWriter) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Len()
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.TrimSpace(w.buf.String())
}
