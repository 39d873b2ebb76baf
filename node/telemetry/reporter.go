package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

// Target is an orchestrator a reporter may push to: its serf name and
// HTTP API address.
type Target struct {
	Name, Addr string
}

// ReporterConfig configures a Reporter.
type ReporterConfig struct {
	// Node is the desktop's serf node name.
	Node string
	// Targets lists the alive orchestrators with an HTTP API (from
	// gossip); it is called for every push and must be safe for
	// concurrent use.
	Targets func() []Target
	// Client sends the pushes (its Transport carries the node's TLS
	// client configuration); HTTPS says to use https.
	Client *http.Client
	HTTPS  bool
	// Token is sent when set (-http-token).
	Token string
	// Reachable, if set, is asked before each request whether the target
	// can be reached at all (`chiffon sim` applies its network's
	// partitions to pushes with it); nil: every target can.
	Reachable func(Target) bool
	// MinBackoff and MaxBackoff bound the wait before a failed push is
	// retried (doubling, each wait ±20 % so that desktops that failed
	// together do not retry together; default 1 s and 5 s): a failure is
	// an election or a leader out of reach for a while, and the first
	// push after it should not wait for a heartbeat. A push the
	// orchestrators refuse (401, 403, a 404 from an orchestrator without
	// the endpoint) waits RefusedWait (default 30 s): retrying soon would
	// not change the answer.
	MinBackoff, MaxBackoff time.Duration
	RefusedWait            time.Duration
	Logger                 *slog.Logger
}

// Reporter sends a desktop's newest tags to the raft leader, one push at
// a time: an Offer while a push is in flight or waiting to be retried
// replaces the tags it will send next, so a slow or absent leader costs
// one pending push, never a queue. Gossip carries the same tags anyway.
type Reporter struct {
	cfg ReporterConfig

	mu     sync.Mutex
	latest map[string]string
	gen    uint64 // moves with every Offer
	leader Target // the orchestrator that last took a push

	notify chan struct{}
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	rng    *rand.Rand

	sent, failed atomic.Uint64
}

// Stats is what a reporter has done so far.
type Stats struct {
	// Sent counts pushes a leader took; Failed pushes that no
	// orchestrator took (each retried later with the newest tags).
	Sent, Failed uint64
}

// Stats returns the reporter's counts.
func (r *Reporter) Stats() Stats { return Stats{Sent: r.sent.Load(), Failed: r.failed.Load()} }

// NewReporter starts a reporter; Close stops it.
func NewReporter(cfg ReporterConfig) *Reporter {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.RefusedWait <= 0 {
		cfg.RefusedWait = max(30*time.Second, cfg.MaxBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reporter{cfg: cfg, notify: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	go r.run()
	return r
}

// Offer hands the reporter the node's new tags; it never blocks.
func (r *Reporter) Offer(tags map[string]string) {
	c := maps.Clone(tags)
	r.mu.Lock()
	r.latest = c
	r.gen++
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Close stops the reporter and waits for its push in flight.
func (r *Reporter) Close() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

// RetryMax is the longest a desktop waits to retry a failed push
// (ReporterConfig.MaxBackoff): 5 s (an election, a leader restarting),
// never past the heartbeat that brings the next sample anyway, and not
// under the first wait (1 s). It was the heartbeat (30 s): a desktop
// whose pushes failed through a spell of 16 s without a leader waited up
// to 16 s more after a new one was elected.
func RetryMax(heartbeat time.Duration) time.Duration {
	return max(min(5*time.Second, heartbeat), time.Second)
}

// jitter is d ±20 %.
func (r *Reporter) jitter(d time.Duration) time.Duration {
	r.mu.Lock()
	f := 0.8 + 0.4*r.rng.Float64()
	r.mu.Unlock()
	return time.Duration(float64(d) * f)
}

// errRefused is a push the orchestrators will not take as configured;
// errNoLeader means every orchestrator asked said it does not lead and
// named none (an election, or a cluster still forming).
var (
	errRefused  = errors.New("telemetry push refused")
	errNoLeader = errors.New("no orchestrator leads yet")
	// errNotLeader is one orchestrator's 421.
	errNotLeader = errors.New("not the leader")
)

func (r *Reporter) run() {
	defer close(r.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-r.done:
		}
	}()
	var sent uint64
	backoff := r.cfg.MinBackoff
	lastErr, warned := "", false
	for {
		select {
		case <-r.stop:
			return
		case <-r.notify:
		}
		for {
			r.mu.Lock()
			tags, gen := r.latest, r.gen
			r.mu.Unlock()
			if gen == sent {
				break
			}
			err := r.push(ctx, tags)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				r.sent.Add(1)
				sent, backoff = gen, r.cfg.MinBackoff
				if warned {
					r.cfg.Logger.Info("telemetry pushes to the leader work again")
				}
				lastErr, warned = "", false
				continue
			}
			r.failed.Add(1)
			wait := r.jitter(backoff)
			backoff = min(2*backoff, r.cfg.MaxBackoff)
			if errors.Is(err, errRefused) {
				wait = r.cfg.RefusedWait
			}
			if msg := err.Error(); msg != lastErr {
				// Once per distinct failure: gossip still carries the tags.
				// No leader yet is how every cluster starts: not a warning.
				if errors.Is(err, errNoLeader) {
					r.cfg.Logger.Debug("no leader to push telemetry to yet", "retry-in", wait)
				} else {
					r.cfg.Logger.Warn("telemetry push to the leader failed; gossip still carries the tags", "err", err, "retry-in", wait)
					warned = true
				}
				lastErr = msg
			}
			t := time.NewTimer(wait)
			select {
			case <-r.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// push sends tags to the leader: the orchestrator that took the last
// push first, without listing the others (the common case: gossip's
// member list is read only when that fails), then the others from a
// random start; a follower's 421 names the leader, which is tried next.
func (r *Reporter) push(ctx context.Context, tags map[string]string) error {
	body, err := json.Marshal(Report{Tags: tags})
	if err != nil {
		return err
	}
	tried := map[string]bool{}
	var errs []error
	notLeader := 0
	// attempt sends to t; done means stop trying (taken, refused or
	// cancelled), and next is the leader a follower named.
	attempt := func(t Target) (next string, done bool, err error) {
		tried[t.Addr] = true
		if r.cfg.Reachable != nil && !r.cfg.Reachable(t) {
			errs = append(errs, fmt.Errorf("%s: unreachable", t.Addr))
			return "", false, nil
		}
		next, err = r.send(ctx, t.Addr, body)
		if err == nil {
			r.mu.Lock()
			r.leader = t
			r.mu.Unlock()
			return "", true, nil
		}
		if errors.Is(err, errRefused) || ctx.Err() != nil {
			return "", true, err
		}
		errs = append(errs, err)
		if errors.Is(err, errNotLeader) {
			notLeader++
		}
		return next, false, nil
	}
	r.mu.Lock()
	last := r.leader
	r.mu.Unlock()
	var next string
	if last.Addr != "" {
		var done bool
		if next, done, err = attempt(last); done {
			return err
		}
	}

	targets := r.cfg.Targets()
	r.mu.Lock()
	r.leader = Target{}
	start := 0
	if len(targets) > 0 {
		start = r.rng.IntN(len(targets))
	}
	r.mu.Unlock()
	order := make([]Target, 0, len(targets)+1)
	if next != "" {
		order = append(order, Target{Addr: next})
	}
	for i := range targets {
		order = append(order, targets[(start+i)%len(targets)])
	}
	for len(order) > 0 {
		t := order[0]
		order = order[1:]
		if tried[t.Addr] {
			continue
		}
		if t.Name == "" {
			t.Name = nameOf(targets, t.Addr)
		}
		next, done, err := attempt(t)
		if done {
			return err
		}
		if next != "" && !tried[next] {
			order = append([]Target{{Addr: next}}, order...)
		}
	}
	if len(errs) == 0 {
		return fmt.Errorf("%w: no orchestrator with an HTTP API in the gossip pool", errNoLeader)
	}
	if notLeader == len(errs) {
		return fmt.Errorf("%w (%d orchestrators asked)", errNoLeader, notLeader)
	}
	return errors.Join(errs...)
}

func nameOf(targets []Target, addr string) string {
	for _, t := range targets {
		if t.Addr == addr {
			return t.Name
		}
	}
	return ""
}

// send PUTs body to the orchestrator at addr. On a 421 it returns the
// leader's address the follower named.
func (r *Reporter) send(ctx context.Context, addr string, body []byte) (leader string, err error) {
	scheme := "http"
	if r.cfg.HTTPS {
		scheme = "https"
	}
	u := scheme + "://" + addr + strings.Replace(Path, "{node}", url.PathEscape(r.cfg.Node), 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.cfg.Token != "" {
		req.Header.Set(apitype.HeaderToken, r.cfg.Token)
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var e apitype.Error
	if json.Unmarshal(msg, &e) == nil && e.Error != "" {
		msg = []byte(e.Error)
	}
	switch {
	case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK:
		return "", nil
	case resp.StatusCode == http.StatusMisdirectedRequest:
		return resp.Header.Get(HeaderLeader), fmt.Errorf("%w: %s", errNotLeader, addr)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden ||
		resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed ||
		resp.StatusCode == http.StatusBadRequest:
		return "", fmt.Errorf("%w by %s: %d %s", errRefused, addr, resp.StatusCode, msg)
	default:
		return "", fmt.Errorf("%s: %d %s", addr, resp.StatusCode, msg)
	}
}
