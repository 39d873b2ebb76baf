package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// The persistent handler mode (-work-handler-mode persistent), like Bazel's
// persistent workers: instead of a process per item, the runner keeps up
// to Concurrency handler processes (`sh -c HANDLER`, started lazily, one
// per slot) and hands each of them one item at a time over the lines-v1
// protocol:
//
//   - the runner writes one request line to the process's stdin:
//     {"work_id":"...","attempt":N,"gpu_index":G,"payload":<JSON>}
//     (payload omitted when the assignment has none; the fields come in
//     that order and the line is compact, but that is informative, not
//     part of the contract);
//   - the process writes one response line to its stdout:
//     {"work_id":"...","exit_code":0,"output":"...","error":"..."}
//     exit_code 0 succeeds the item, any other value fails it; output is a
//     string, capped at OutputLimit; error is optional and becomes the
//     failed item's error (else "handler answered exit code N");
//   - then the process waits for the next request.
//
// The environment is the node's, then Config.Env, then
// CHIFFON_WORK_PROTOCOL=lines-v1. CHIFFON_WORK_ID, CHIFFON_WORK_ATTEMPT and
// CUDA_VISIBLE_DEVICES are not set per item (one process serves many
// items): the request carries the ids and gpu_index.
//
// A process that breaks the protocol cannot be resynchronised, so any
// trouble fails the item and discards the process (its whole process group
// is killed); the next item starts a fresh one. Such an item's error ends
// with the last 4 KiB of the process's stderr; an answered item's error is
// the answer's. A process that dies before
// its first answer delays the next start by a backoff, so that a broken
// handler does not become a tight loop of process starts.

// ProtocolLinesV1 is the persistent handlers' protocol, announced to them
// as CHIFFON_WORK_PROTOCOL.
const ProtocolLinesV1 = "lines-v1"

const (
	// lineSlack is how much longer than OutputLimit a response line may
	// be: room for the other fields and JSON escapes.
	lineSlack = 64 << 10
	// exitGrace bounds the wait for the second sign of a process's end
	// (its exit after stdout closed, or its last line after it exited).
	exitGrace = time.Second
	// killWait bounds how long an item waits for a killed process to be
	// reaped (one stuck in the kernel, in a GPU driver say, may take
	// longer); the reaping then goes on in the background.
	killWait = 5 * time.Second
	// backoffMin and backoffMax bound the delay before starting a process
	// after one died before its first answer.
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

// errLineTooLong is the reader's error for a response line over the limit.
var errLineTooLong = errors.New("response line too long")

// request is the line the runner writes for an item. The field order is
// deliberate (work_id first, so a shell handler can cut it out with sed)
// but not contractual.
type request struct {
	WorkID   string          `json:"work_id"`
	Attempt  int             `json:"attempt"`
	GPUIndex int             `json:"gpu_index"`
	Payload  json.RawMessage `json:"payload,omitempty"`
}

// response is the line a handler answers with. ExitCode is a pointer so
// that a missing exit_code is a protocol error, not a success.
type response struct {
	WorkID   string `json:"work_id"`
	ExitCode *int   `json:"exit_code"`
	Output   string `json:"output"`
	Error    string `json:"error"`
}

// line is one thing the reader goroutine saw on a process's stdout: a
// line, or (last) the error that ended reading.
type line struct {
	b   []byte
	err error
}

// proc is one running handler process. It belongs to the pool while idle
// and to the one execute that took it while busy.
type proc struct {
	cmd    *exec.Cmd
	pid    int
	stdin  *os.File // write end; kill closes it
	stdout *os.File // read end; closed once the process is reaped
	stderr *tailWriter
	// lines receives what the reader goroutine reads; done, closed on
	// discard, releases the reader when nobody takes a line any more.
	lines chan line
	done  chan struct{}
	// exited is closed by the waiter goroutine once the process is reaped;
	// waitErr (cmd.Wait's error) is written before.
	exited  chan struct{}
	waitErr error
	// served counts the items answered; only the proc's owner touches it.
	served int
}

// kill kills the process's whole group and closes its stdin, which also
// unblocks a write to a process that does not read. Safe to call more
// than once and from any goroutine.
func (p *proc) kill() {
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	_ = p.stdin.Close()
}

// isExited reports whether the process has been reaped.
func (p *proc) isExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// exitStatus describes how the reaped process ended ("exit status 3").
func (p *proc) exitStatus() string {
	var exitErr *exec.ExitError
	switch {
	case p.waitErr == nil:
		return "exit status 0"
	case errors.As(p.waitErr, &exitErr):
		return exitErr.ProcessState.String()
	default:
		return p.waitErr.Error()
	}
}

// read is the reader goroutine: it passes stdout on line by line until
// reading fails (EOF, a line over maxLine, or stdout closed by discard).
func (p *proc) read(maxLine int) {
	br := bufio.NewReaderSize(p.stdout, 64<<10)
	for {
		b, err := readLine(br, maxLine)
		select {
		case p.lines <- line{b, err}:
		case <-p.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// readLine reads one line without its newline, at most maxLine bytes
// long. A last line without a newline counts as a line.
func readLine(br *bufio.Reader, maxLine int) ([]byte, error) {
	var b []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(b)+len(frag) > maxLine+1 {
			return nil, fmt.Errorf("%w: over %d bytes", errLineTooLong, maxLine)
		}
		b = append(b, frag...)
		switch {
		case err == nil:
			return b[:len(b)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(b) > 0:
			return b, nil // the next read returns EOF
		default:
			return nil, err
		}
	}
}

// persistentExecutor is the persistent handler mode: a pool of long-lived
// handler processes, one item at a time each.
type persistentExecutor struct {
	cfg    Config
	logger *slog.Logger
	wg     sync.WaitGroup // every process's reader and waiter

	mu sync.Mutex
	// idle holds the processes waiting for an item; closed refuses to
	// keep or start more; backoff is the current crash backoff and
	// notBefore when the next process may start. All guarded by mu.
	idle      []*proc
	closed    bool
	backoff   time.Duration
	notBefore time.Time
}

func newPersistentExecutor(cfg Config, logger *slog.Logger) *persistentExecutor {
	return &persistentExecutor{cfg: cfg, logger: logger.With("handler-mode", HandlerPersistent)}
}

// execute hands a to an idle process (or a new one) and waits for its
// answer, the process's end, the timeout or ctx.
func (x *persistentExecutor) execute(ctx context.Context, a Assignment, started func(pgid int)) State {
	ctx, cancel := context.WithTimeout(ctx, x.cfg.Timeout)
	defer cancel()
	p, err := x.get(ctx)
	if err != nil {
		reason := fmt.Sprintf("run handler: %v", err)
		if ctx.Err() != nil {
			reason = ctxReason(ctx, x.cfg.Timeout)
		}
		return State{Status: StatusFailed, ExitCode: -1, Error: reason}
	}
	started(p.pid) // its own process group (Setpgid)
	st, answered, keep := x.serve(ctx, p, a)
	if keep {
		x.put(p)
		return st
	}
	// A process that never answered is what a crash loop looks like; a
	// timeout or a cancellation is not its fault.
	x.discard(p, st.Error, p.served == 0 && ctx.Err() == nil)
	if !answered {
		// The process is gone (reaped, normally), so its stderr is all
		// there. An answered item has the answer's error instead: stderr
		// runs on its own pipe, not in step with the answers, so a tail
		// taken at an answer could as well belong to the item before.
		if tail := p.stderr.String(); tail != "" {
			st.Error += "; stderr: " + tail
		}
	}
	return st
}

// serve runs one item on p. answered says whether p answered it, keep
// whether p may serve another.
func (x *persistentExecutor) serve(ctx context.Context, p *proc, a Assignment) (st State, answered, keep bool) {
	// failed is the result of an item the process did not answer. Once ctx
	// has ended the process was killed for it, and whatever it did then is
	// a consequence: the reason is the timeout or the cancellation.
	failed := func(format string, args ...any) (State, bool, bool) {
		reason := ctxReason(ctx, x.cfg.Timeout)
		if ctx.Err() == nil {
			reason = fmt.Sprintf(format, args...)
		}
		return State{Status: StatusFailed, ExitCode: -1, Error: reason}, false, false
	}
	// On timeout or cancellation the process group goes, which also ends a
	// write to a process that does not read and the wait for its answer.
	killed := context.AfterFunc(ctx, p.kill)
	defer killed()

	var req bytes.Buffer
	enc := json.NewEncoder(&req) // compact, one line, newline-terminated
	enc.SetEscapeHTML(false)
	if err := enc.Encode(request{WorkID: a.WorkID, Attempt: a.Attempt, GPUIndex: a.GPUIndex, Payload: a.Payload}); err != nil {
		return failed("encode request: %v", err) // Submit checked the payload; not expected
	}
	if _, err := p.stdin.Write(req.Bytes()); err != nil {
		return failed("%s", x.ended(p, "stdin"))
	}
	var l line
	select {
	case l = <-p.lines:
	case <-p.exited:
		// The answer may still be in the pipe: take it if it comes.
		p.kill() // children holding stdout must not hold the answer back
		t := time.NewTimer(exitGrace)
		defer t.Stop()
		select {
		case l = <-p.lines:
		case <-t.C:
			return failed("handler exited: %s", p.exitStatus())
		}
	case <-ctx.Done():
		return failed("") // the timeout or the cancellation
	}
	if l.err != nil {
		if errors.Is(l.err, errLineTooLong) {
			return failed("handler broke the line protocol: %v", l.err)
		}
		return failed("%s", x.ended(p, "stdout"))
	}
	resp, err := decodeResponse(l.b, a.WorkID)
	if err != nil {
		return failed("handler broke the line protocol: %v", err)
	}
	p.served++
	st = State{Status: StatusSucceeded, ExitCode: *resp.ExitCode, Output: resp.Output}
	if len(st.Output) > x.cfg.OutputLimit {
		st.Output, st.Truncated = st.Output[:x.cfg.OutputLimit], true
	}
	if st.ExitCode != 0 {
		st.Status, st.Error = StatusFailed, resp.Error
		if st.Error == "" {
			st.Error = fmt.Sprintf("handler answered exit code %d", st.ExitCode)
		}
	}
	// A process killed for the timeout just as it answered, or one that
	// answered and exited, serves no more.
	return st, true, killed() && !p.isExited()
}

// ended waits (briefly) for p to exit once its stdin or stdout (pipe)
// was found closed, and says how it ended. A process may close a pipe and
// live on: it is then killed.
func (x *persistentExecutor) ended(p *proc, pipe string) string {
	t := time.NewTimer(exitGrace)
	defer t.Stop()
	select {
	case <-p.exited:
		return "handler exited: " + p.exitStatus()
	case <-t.C:
		p.kill()
		return fmt.Sprintf("handler closed its %s without answering (killed)", pipe)
	}
}

// decodeResponse checks a response line against the item it answers.
func decodeResponse(b []byte, workID string) (response, error) {
	var resp response
	if err := json.Unmarshal(b, &resp); err != nil {
		return resp, fmt.Errorf("response is not a JSON object (%v): %q", err, excerpt(b))
	}
	switch {
	case resp.WorkID != workID:
		return resp, fmt.Errorf("response for work_id %q, want %q", resp.WorkID, workID)
	case resp.ExitCode == nil:
		return resp, fmt.Errorf("response without exit_code: %q", excerpt(b))
	}
	return resp, nil
}

// excerpt shortens a line for an error message.
func excerpt(b []byte) []byte {
	if len(b) > 200 {
		return append(b[:200:200], "..."...)
	}
	return b
}

// get returns an idle process, or starts one once the crash backoff (if
// any) has passed. A process that died or wrote something while idle is
// discarded on the way.
func (x *persistentExecutor) get(ctx context.Context) (*proc, error) {
	for {
		x.mu.Lock()
		if x.closed {
			x.mu.Unlock()
			return nil, ErrClosed
		}
		if n := len(x.idle); n > 0 {
			p := x.idle[n-1]
			x.idle = x.idle[:n-1]
			x.mu.Unlock()
			if reason := idleTrouble(p); reason != "" {
				x.discard(p, reason, false)
				continue
			}
			return p, nil
		}
		wait := time.Until(x.notBefore)
		x.mu.Unlock()
		if wait <= 0 {
			return x.start()
		}
		x.logger.Debug("waiting before starting a handler process", "backoff", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// idleTrouble says what is wrong with an idle process, or "".
func idleTrouble(p *proc) string {
	if p.isExited() {
		return "handler exited while idle: " + p.exitStatus()
	}
	select {
	case l := <-p.lines:
		if l.err != nil {
			return "handler closed its stdout while idle"
		}
		return fmt.Sprintf("handler broke the line protocol: wrote while idle: %q", excerpt(l.b))
	default:
		return ""
	}
}

// start starts a handler process and its reader and waiter goroutines.
func (x *persistentExecutor) start() (*proc, error) {
	p, err := x.startProc()
	if err != nil {
		x.crashed()
		return nil, err
	}
	x.logger.Info("handler process started", "pid", p.pid)
	x.wg.Add(2)
	go func() {
		defer x.wg.Done()
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	go func() {
		defer x.wg.Done()
		p.read(x.cfg.OutputLimit + lineSlack)
	}()
	return p, nil
}

func (x *persistentExecutor) startProc() (*proc, error) {
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		return nil, err
	}
	cmd := exec.Command("sh", "-c", x.cfg.Handler)
	cmd.Stdin, cmd.Stdout = stdinR, stdoutW
	stderr := &tailWriter{limit: stderrTail}
	cmd.Stderr = stderr
	cmd.Env = append(os.Environ(), x.cfg.Env...)
	cmd.Env = append(cmd.Env, "CHIFFON_WORK_PROTOCOL="+ProtocolLinesV1)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Children that keep stderr open must not hold Wait back.
	cmd.WaitDelay = 2 * time.Second
	err = cmd.Start()
	// The child has its ends; ours would keep EOF from ever coming.
	stdinR.Close()
	stdoutW.Close()
	if err != nil {
		stdinW.Close()
		stdoutR.Close()
		return nil, err
	}
	return &proc{cmd: cmd, pid: cmd.Process.Pid, stdin: stdinW, stdout: stdoutR, stderr: stderr,
		lines: make(chan line), done: make(chan struct{}), exited: make(chan struct{})}, nil
}

// put returns a process that answered to the idle pool, and resets the
// crash backoff.
func (x *persistentExecutor) put(p *proc) {
	x.mu.Lock()
	x.backoff, x.notBefore = 0, time.Time{}
	closed := x.closed
	if !closed {
		x.idle = append(x.idle, p)
	}
	x.mu.Unlock()
	if closed {
		x.discard(p, "runner closed", false)
	}
}

// crashed lengthens the crash backoff: 100 ms, doubling up to 5 s.
func (x *persistentExecutor) crashed() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.backoff = min(max(2*x.backoff, backoffMin), backoffMax)
	x.notBefore = time.Now().Add(x.backoff)
}

// discard kills p's process group and waits (bounded) until it is reaped,
// so that a slot never holds two processes. crashed marks a process that
// died or misbehaved before its first answer.
func (x *persistentExecutor) discard(p *proc, reason string, crashed bool) {
	p.kill()
	close(p.done)
	if crashed {
		x.crashed()
	}
	x.logger.Info("handler process discarded", "pid", p.pid, "reason", reason, "items-served", p.served)
	t := time.NewTimer(killWait)
	defer t.Stop()
	select {
	case <-p.exited:
		p.stdout.Close() // ends the reader even if a stray child holds stdout
	case <-t.C:
		x.logger.Warn("killed handler process not reaped yet; going on without it", "pid", p.pid, "waited", killWait)
		// The waiter goroutine is still counted in wg, so Add is safe here.
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			<-p.exited
			p.stdout.Close()
		}()
	}
}

// close kills the idle processes and waits for every process's goroutines.
// The runner calls it once no item runs any more.
func (x *persistentExecutor) close() {
	x.mu.Lock()
	x.closed = true
	idle := x.idle
	x.idle = nil
	x.mu.Unlock()
	for _, p := range idle {
		x.discard(p, "runner closed", false)
	}
	x.wg.Wait()
}
