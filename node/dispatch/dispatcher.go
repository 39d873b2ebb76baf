package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
	"github.com/chiffon-dev/chiffon/node/worker"
)

// Sentinel errors.
var (
	// ErrInvalidConfig is returned by New for an unusable Config.
	ErrInvalidConfig = errors.New("invalid dispatch config")
)

// HeaderReason is the header that says why a message was dead-lettered.
const HeaderReason = "x-chiffon-reason"

// HeaderWorkID carries the work_id on dead-lettered copies of accepted work.
const HeaderWorkID = "x-chiffon-work-id"

// Config configures the work bridge and dispatcher.
type Config struct {
	// AMQPURL is the broker (-amqp-url, CHIFFON_AMQP_URL). Empty: no
	// bridge; Run says so once and waits.
	AMQPURL string
	// WorkQueue is consumed for requests (-amqp-work-queue).
	WorkQueue string
	// DeadQueue receives malformed requests and copies of work that failed
	// for want of capacity or attempts.
	DeadQueue string
	// ResultsQueue receives results of requests without reply_to.
	ResultsQueue string
	// Prefetch bounds unacknowledged deliveries.
	Prefetch int
	// MaxPending bounds active (pending, assigned, running) work: at the
	// limit the bridge takes no more requests until some finish.
	MaxPending int
	// PendingTimeout is how long work waits for capacity when its message
	// has no AMQP expiration (-work-pending-timeout); requeued work gets it
	// afresh.
	PendingTimeout time.Duration
	// MaxAttempts bounds placements of one work item.
	MaxAttempts int
	// MaxRequestBytes caps a request body.
	MaxRequestBytes int
	// Retention is how long finished, published work stays in the
	// registry (and so how long a resent work_id is still a duplicate)
	// (-work-retention).
	Retention time.Duration
	// RetentionMax caps how many finished, published items the registry
	// keeps, oldest forgotten first, whatever their age (-work-retention-max;
	// 0: no cap). Every item is in every replica's memory and in every raft
	// snapshot, so at hundreds of items a second the age alone would let
	// the registry grow by millions a day.
	RetentionMax int
	// GCInterval is how often the leader forgets results past the
	// retention.
	GCInterval time.Duration
	// ApplyTimeout bounds each raft write.
	ApplyTimeout time.Duration
	// LongPoll is how long one GET to a desktop waits for a change (at
	// most a third of UnreachableAfter).
	LongPoll time.Duration
	// Lease is how long after its assignment a desktop may still start an
	// attempt (-work-lease): the fence against a desktop that was frozen or
	// cut off while the work was placed elsewhere. An assigned attempt that
	// may not have started is placed again no sooner than 2 × Lease after
	// its assignment (one lease of allowance for clock skew).
	Lease time.Duration
	// UnreachableAfter is how long the leader's calls to a desktop's work
	// endpoint must have failed before it marks the desktop unreachable
	// for placement and places its work again (-work-unreachable-after);
	// gossip may still call the desktop online. It also bounds each call:
	// a third of it (at most 10 s) per call, plus the long poll's wait.
	UnreachableAfter time.Duration
	// FlapHalfLife is the half-life of the nodes' flap scores
	// (-flap-half-life, the leader's LivenessConfig.FlapHalfLife), by which
	// placement decays them to now.
	FlapHalfLife time.Duration
	// Token is the cluster token sent to desktops.
	Token string
	// HTTPClient talks to desktops; nil builds one. For desktops that
	// serve HTTPS it is the template of one client per desktop.
	HTTPClient *http.Client
	// TLS is the orchestrator's certificate and the cluster CA, for
	// desktops that advertise an https:// work address: the dispatcher
	// presents it and requires the desktop's certificate to chain to the
	// CA and name that desktop's node ("<node>.client.<domain>", or
	// "<node>.server.<domain>" for an orchestrator that also takes work).
	// Nil: such desktops cannot be reached (worker.ErrNoTLS).
	TLS *tlsutil.Bundle
	// Wake holds the wake-on-LAN settings (wake.go).
	Wake WakeConfig
	// Supports reports whether every raft server can apply raft command
	// type t (compat.go); nil means all can. The dispatcher writes nothing
	// newer than 0.1.0's commands (1–7) until they all can: an older
	// follower would stop on it in the middle of a rolling upgrade.
	Supports func(t consensus.CommandType) bool
	// Dial connects to the broker; nil means DialAMQP.
	Dial Dialer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the dispatcher's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{WorkQueue: "chiffon.work", DeadQueue: "chiffon.work.dead", ResultsQueue: "chiffon.results",
		Prefetch: 64, MaxPending: 1000, PendingTimeout: 10 * time.Minute, MaxAttempts: 3,
		MaxRequestBytes: 256 << 10, Retention: 24 * time.Hour, RetentionMax: 100_000, GCInterval: time.Minute,
		ApplyTimeout: 10 * time.Second, LongPoll: 30 * time.Second, Lease: 10 * time.Second, UnreachableAfter: 30 * time.Second,
		Wake: DefaultWakeConfig(), FlapHalfLife: consensus.DefaultFlapHalfLife}
}

// Store is what the dispatcher needs of the raft store; *consensus.Store
// implements it.
type Store interface {
	Apply(cmd consensus.Command, timeout time.Duration) (uint64, error)
	FSM() *consensus.FSM
}

var _ Store = (*consensus.Store)(nil)

// Dispatcher is the leader's work machinery: the RabbitMQ bridge (consume
// requests, record them, publish results from the outbox), placement, and
// delivery to desktops. Create one per node with New; call Run while the
// node leads.
type Dispatcher struct {
	cfg    Config
	store  Store
	logger *slog.Logger
	client *worker.Client
	now    func() time.Time

	noURLOnce sync.Once
	// running guards against two Runs at once.
	running sync.Mutex
	// limitLogged is when the pending limit was last logged and limitHits
	// how often it was hit since: under a steady overload the limit is hit
	// every few items, so it is logged at most once per limitLogEvery.
	// Owned by the consumer (one at a time, under running).
	limitLogged time.Time
	limitHits   int
	// reach is what this leader's calls learnt of each desktop's work
	// endpoint (reach.go).
	reach *reachability
	// metrics counts the placements and results recorded (metrics.go).
	metrics *metrics
	// mixedOnce logs once that a mixed-version cluster holds back a newer
	// raft command.
	mixedOnce sync.Once
	// yields keeps new work off desktops that just handed work back for
	// their owner, until gossip brings the owner's state (owner.go).
	yields *yieldHints
}

// limitLogEvery bounds how often reaching the pending limit is logged.
const limitLogEvery = time.Minute

// New validates cfg. It opens nothing.
func New(cfg Config, store Store) (*Dispatcher, error) {
	bad := func(format string, a ...any) (*Dispatcher, error) {
		return nil, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case store == nil:
		return bad("no store")
	case cfg.WorkQueue == "" || cfg.DeadQueue == "" || cfg.ResultsQueue == "":
		return bad("-amqp-work-queue and the dead-letter and results queues must be named")
	case cfg.Prefetch < 1 || cfg.MaxPending < 1 || cfg.MaxAttempts < 1 || cfg.MaxRequestBytes < 1:
		return bad("prefetch, max pending, max attempts and max request bytes must be at least 1")
	case cfg.PendingTimeout <= 0 || cfg.Retention <= 0 || cfg.ApplyTimeout <= 0 || cfg.LongPoll <= 0 || cfg.GCInterval <= 0:
		return bad("-work-pending-timeout, -work-retention, apply timeout, long poll and GC interval must be positive")
	case cfg.RetentionMax < 0:
		return bad("-work-retention-max: %d; must be 0 (no cap) or more", cfg.RetentionMax)
	case cfg.Lease <= 0 || cfg.UnreachableAfter <= 0:
		return bad("-work-lease and -work-unreachable-after must be positive")
	case cfg.Wake.Broadcast != "" && cfg.Wake.Timeout <= 0:
		return bad("-wol-timeout must be positive")
	}
	if cfg.Wake.Broadcast != "" {
		if _, err := net.ResolveUDPAddr("udp4", cfg.Wake.Broadcast); err != nil {
			return bad("-wol-broadcast: %q is not an IPv4 HOST:PORT such as 255.255.255.255:9", cfg.Wake.Broadcast)
		}
	}
	if cfg.Dial == nil {
		cfg.Dial = DialAMQP
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	hc := cfg.HTTPClient
	if hc == nil {
		// Every item in flight holds one connection to its desktop (a long
		// poll); net/http's default keeps only 2 idle per host, so at
		// hundreds of items a second most calls would dial afresh.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 1024, 256
		hc = &http.Client{Timeout: cfg.LongPoll + 15*time.Second, Transport: tr}
		// Each call has its own, shorter deadline (callTimeout); the
		// dial must fail sooner still, so a retry can follow within it.
		tr.DialContext = (&net.Dialer{Timeout: min(5*time.Second, cfg.UnreachableAfter/6), KeepAlive: 30 * time.Second}).DialContext
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Dispatcher{cfg: cfg, store: store, logger: logger.With("component", "dispatch"),
		client: &worker.Client{HTTP: hc, Token: cfg.Token, TLS: cfg.TLS}, now: cfg.Now, reach: newReachability(),
		metrics: newMetrics(), yields: newYieldHints()}, nil
}

// Run does the leader's work until ctx ends, then stops everything it
// started and returns nil. Call it once this node leads and has run a raft
// Barrier (the node's leadership owner does both, so the dispatcher acts
// only on everything the previous leader committed), and cancel ctx when
// it stops leading; a later Run (a new term) resumes from the registry.
// Without an AMQP URL it logs that once and waits.
func (d *Dispatcher) Run(ctx context.Context) error {
	if d.cfg.AMQPURL == "" {
		d.noURLOnce.Do(func() { d.logger.Info("no -amqp-url: the RabbitMQ work bridge is off") })
		<-ctx.Done()
		return nil
	}
	d.running.Lock()
	defer d.running.Unlock()
	d.reach.reset() // what a previous term learnt is stale
	var wg sync.WaitGroup
	wg.Go(func() { d.runPlanner(ctx) })
	wg.Go(func() { d.runBroker(ctx) })
	wg.Go(func() { d.runReach(ctx) })
	wg.Wait()
	d.client.CloseIdleConnections() // the desktops' keep-alives
	return nil
}

// ---- broker side ----

// runBroker keeps a broker connection up, with backoff and jitter, and runs
// the consumer and the outbox on it.
func (d *Dispatcher) runBroker(ctx context.Context) {
	b := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	failing := false // log the first failure of a streak loudly, the rest quietly
	for ctx.Err() == nil {
		connected, err := d.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			failing = false
			b.reset()
		}
		level := slog.LevelDebug
		if !failing {
			level = slog.LevelWarn
		}
		failing = true
		if errors.Is(err, ErrQueueConflict) {
			level = slog.LevelError
		}
		d.logger.Log(ctx, level, "work bridge lost the broker; reconnecting with backoff", "err", err, "url", redact(d.cfg.AMQPURL))
		if !sleepCtx(ctx, b.next()) {
			return
		}
	}
}

// session runs one connection: declare, consume, publish, until the
// connection fails or ctx ends. connected reports whether it got as far as
// consuming.
func (d *Dispatcher) session(ctx context.Context) (connected bool, err error) {
	conn, err := d.cfg.Dial(ctx, d.cfg.AMQPURL)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	cons, err := conn.Channel()
	if err != nil {
		return false, err
	}
	pub, err := conn.Channel()
	if err != nil {
		return false, err
	}
	for _, q := range []string{d.cfg.WorkQueue, d.cfg.DeadQueue, d.cfg.ResultsQueue} {
		if err := pub.DeclareQueue(q); err != nil {
			return false, err
		}
	}
	deliveries, err := cons.Consume(d.cfg.WorkQueue, d.cfg.Prefetch)
	if err != nil {
		return false, err
	}
	d.logger.Info("work bridge connected", "url", redact(d.cfg.AMQPURL), "queue", d.cfg.WorkQueue)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errs <- d.consume(sctx, pub, deliveries) })
	wg.Go(func() { errs <- d.outbox(sctx, pub) })
	select {
	case err = <-errs:
	case <-conn.Done():
		err = errors.New("connection closed")
	case <-ctx.Done():
	}
	cancel()
	_ = conn.Close() // ends the consumer's delivery channel
	wg.Wait()
	return true, err
}

// consume records requests in the registry and acks them only after the
// raft commit. It returns when the deliveries end or ctx does.
func (d *Dispatcher) consume(ctx context.Context, pub Channel, deliveries <-chan Delivery) error {
	for {
		var batch []Delivery
		select {
		case <-ctx.Done():
			return nil
		case dl, ok := <-deliveries:
			if !ok {
				return errors.New("consumer ended")
			}
			batch = append(batch, dl)
		}
	more:
		for len(batch) < d.cfg.Prefetch {
			select {
			case dl, ok := <-deliveries:
				if !ok {
					break more
				}
				batch = append(batch, dl)
			default:
				break more
			}
		}
		if err := d.handleBatch(ctx, pub, batch); err != nil {
			return err
		}
	}
}

// handleBatch dead-letters bad requests, acks known work_ids, waits while
// too much work is active, records the new ones in one raft entry, and
// acks them.
func (d *Dispatcher) handleBatch(ctx context.Context, pub Channel, batch []Delivery) error {
	fsm := d.store.FSM()
	now := d.now()
	var (
		items []consensus.WorkItem
		dls   []Delivery // dls[i] carried items[i]
		seen  = map[string]bool{}
	)
	for _, dl := range batch {
		err := CheckSchema(dl.Headers)
		var req apitype.WorkRequest
		if err == nil {
			req, err = ParseRequest(dl.Body, d.cfg.MaxRequestBytes)
		}
		if err != nil {
			if err := d.deadLetter(ctx, pub, dl.Message, reasonOf(err), ""); err != nil {
				return err // unacked: the broker redelivers it on the next connection
			}
			d.logger.Warn("dead-lettered a bad work request", "reason", reasonOf(err))
			if err := dl.Acker.Ack(); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
			continue
		}
		if _, known := fsm.GetWork(req.WorkID); known || seen[req.WorkID] {
			// Redelivered, or sent twice: recorded already, never run twice.
			// (A duplicate within this batch is acked only after the
			// first copy's commit, below, or redelivered with it.)
			if !seen[req.WorkID] {
				d.logger.Debug("duplicate work_id acked", "work-id", req.WorkID, "redelivered", dl.Redelivered)
				if err := dl.Acker.Ack(); err != nil {
					return fmt.Errorf("ack: %w", err)
				}
				continue
			}
		}
		if err := checkPin(fsm, req.AgentID); err != nil {
			if err := d.deadLetter(ctx, pub, dl.Message, reasonOf(err), req.WorkID); err != nil {
				return err // unacked: the broker redelivers it on the next connection
			}
			d.logger.Warn("dead-lettered a work request pinned to a node that cannot run work",
				"work-id", req.WorkID, "agent-id", req.AgentID, "reason", reasonOf(err))
			if err := dl.Acker.Ack(); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
			continue
		}
		seen[req.WorkID] = true
		deadline, ok := expirationDeadline(dl.Expiration, now)
		if !ok {
			deadline = now.Add(d.cfg.PendingTimeout)
		}
		items = append(items, consensus.WorkItem{WorkID: req.WorkID, Requirements: consensus.Requirements(req.Requirements),
			PinAgentID: req.AgentID, Payload: req.Payload, ReplyTo: dl.ReplyTo, CorrelationID: dl.CorrelationID,
			MaxAttempts: d.cfg.MaxAttempts, Deadline: deadline, SubmittedAt: now})
		dls = append(dls, dl)
	}
	// Record as many as the pending limit allows, ack them, repeat. A
	// resubmitted duplicate in the same batch is a no-op in the FSM.
	for len(items) > 0 {
		room, err := d.waitForRoom(ctx)
		if err != nil {
			return nil // ctx ended: unacked messages return to the queue
		}
		n := min(room, len(items))
		if _, err := d.store.Apply(consensus.SubmitWork{At: d.now(), Items: items[:n]}, d.cfg.ApplyTimeout); err != nil {
			return fmt.Errorf("record work: %w", err)
		}
		for _, dl := range dls[:n] {
			if err := dl.Acker.Ack(); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
		}
		items, dls = items[n:], dls[n:]
	}
	return nil
}

// waitForRoom blocks while MaxPending items are active, then returns how
// many more may be recorded.
func (d *Dispatcher) waitForRoom(ctx context.Context) (int, error) {
	fsm := d.store.FSM()
	waited := false
	for {
		index := fsm.Index()
		c := fsm.WorkCounts()
		active := c[consensus.WorkPending] + c[consensus.WorkAssigned] + c[consensus.WorkRunning]
		if active < d.cfg.MaxPending {
			if waited {
				d.logger.Debug("work below the pending limit again; consuming", "active", active)
			}
			return d.cfg.MaxPending - active, nil
		}
		if !waited {
			waited = true
			d.limitHits++
			if now := d.now(); now.Sub(d.limitLogged) >= limitLogEvery {
				d.logger.Warn("too much work pending; holding further requests until some finishes",
					"active", active, "limit", d.cfg.MaxPending, "times-reached", d.limitHits) // since the last such line
				d.limitLogged, d.limitHits = now, 0
			}
		}
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		_, _ = fsm.WaitIndex(wctx, index)
		cancel()
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
}

// reasonOf is the dead-letter reason of a refused request: the
// RequestError's own, without the sentinel's prefix.
func reasonOf(err error) string {
	var re *RequestError
	if errors.As(err, &re) {
		return re.Reason
	}
	return err.Error()
}

// deadLetter publishes a copy of m to the dead-letter queue with the
// reason, confirmed.
func (d *Dispatcher) deadLetter(ctx context.Context, pub Channel, m Message, reason, workID string) error {
	h := map[string]any{}
	for k, v := range m.Headers {
		h[k] = v
	}
	h[HeaderReason] = reason
	if _, ok := h[apitype.AMQPSchemaHeader]; !ok {
		// The body is version 1: the producer's without a header, or
		// the bridge's own copy of accepted work.
		h[apitype.AMQPSchemaHeader] = int32(apitype.AMQPSchemaVersion)
	}
	if workID != "" {
		h[HeaderWorkID] = workID
	}
	m.Headers, m.Expiration = h, ""
	pctx, cancel := context.WithTimeout(ctx, d.cfg.ApplyTimeout)
	defer cancel()
	return pub.Publish(pctx, d.cfg.DeadQueue, m)
}

// OutboxBatch bounds the results published at once (concurrently, each
// confirmed) and then marked published in one raft entry. It is also the
// most a leader's death or a broker restart can make the next publisher
// send twice.
const OutboxBatch = 128

// outbox publishes the results of finished work that the broker has not
// confirmed yet, then marks them published through raft. A result may be
// published twice (a leader dying between confirm and mark): at least once.
//
// The results of a batch are published concurrently and confirmed
// together, then marked in one entry: one broker round trip and one raft
// round trip per batch rather than per result, which also keeps the
// confirmed-but-not-marked window (what a leader's death republishes) to
// the one batch in flight.
func (d *Dispatcher) outbox(ctx context.Context, pub Channel) error {
	fsm := d.store.FSM()
	for ctx.Err() == nil {
		index := fsm.Index()
		todo := fsm.UnpublishedWork()
		for len(todo) > 0 {
			batch := todo[:min(len(todo), OutboxBatch)]
			todo = todo[len(batch):]
			errs := make([]error, len(batch))
			var wg sync.WaitGroup
			for i, w := range batch {
				wg.Go(func() { errs[i] = d.publishResult(ctx, pub, w) })
			}
			wg.Wait()
			var done []string
			var err error
			for i, w := range batch {
				if errs[i] == nil {
					done = append(done, w.WorkID)
				} else if err == nil {
					err = errs[i]
				}
			}
			if len(done) > 0 {
				d.markPublished(done)
			}
			if err != nil {
				return err
			}
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _ = fsm.WaitIndex(wctx, index)
		cancel()
	}
	return nil
}

func (d *Dispatcher) markPublished(ids []string) {
	if _, err := d.store.Apply(consensus.MarkWorkPublished{At: d.now(), WorkIDs: ids}, d.cfg.ApplyTimeout); err != nil {
		// Not marked: they are published again later (at least once).
		d.logger.Warn("recording published results failed", "err", err, "count", len(ids))
	}
}

func (d *Dispatcher) publishResult(ctx context.Context, pub Channel, w consensus.WorkItem) error {
	body, err := json.Marshal(ResultOf(w))
	if err != nil {
		return err
	}
	q := w.ReplyTo
	if q == "" {
		q = d.cfg.ResultsQueue
	}
	pctx, cancel := context.WithTimeout(ctx, d.cfg.ApplyTimeout)
	defer cancel()
	if err := pub.Publish(pctx, q, Message{Body: body, CorrelationID: w.CorrelationID, MessageID: w.WorkID,
		Headers: map[string]any{HeaderWorkID: w.WorkID, apitype.AMQPSchemaHeader: int32(apitype.AMQPSchemaVersion)}}); err != nil {
		return err
	}
	if w.DeadLetter {
		req, _ := json.Marshal(requestOf(w))
		m := Message{Body: req, CorrelationID: w.CorrelationID, ReplyTo: w.ReplyTo}
		if err := d.deadLetter(ctx, pub, m, w.Error, w.WorkID); err != nil {
			return err
		}
	}
	d.logger.Debug("result published", "work-id", w.WorkID, "status", w.Status, "queue", q)
	return nil
}

// ---- placement and delivery ----

// planDelay is how long the planner lets registry changes gather before
// it plans again. Every placement waits for it once, so it bounds how
// fast a freed slot is reused; the raft round trip of each plan batches
// bursts anyway.
const planDelay = 10 * time.Millisecond

// activeStatuses are the statuses that hold or wait for capacity.
var activeStatuses = []consensus.WorkStatus{consensus.WorkPending, consensus.WorkAssigned, consensus.WorkRunning}

// runPlanner places work and follows it: on every registry change (at most
// every planDelay) and every second (deadlines), it applies Plan's transitions,
// starts a tracker for each placed item and deletes old published results.
func (d *Dispatcher) runPlanner(ctx context.Context) {
	fsm := d.store.FSM()
	var (
		mu sync.Mutex
		// tracking holds the work_id/attempt keys with a live tracker;
		// guarded by mu (trackers remove their own key as they end).
		tracking = map[string]bool{}
		twg      sync.WaitGroup
	)
	defer twg.Wait() // trackers end with ctx
	// The trackers' transitions go through one updater, which batches
	// them into few raft entries; it ends with ctx, after the trackers.
	u := &updater{d: d, in: make(chan pendingTransition)}
	var uwg sync.WaitGroup
	uwg.Go(func() { u.run(ctx) })
	defer uwg.Wait()
	var lastGC time.Time
	for ctx.Err() == nil {
		index := fsm.Index()
		now := d.now()
		items := fsm.WorkByStatus(activeStatuses...)
		nodes := WithFlapScoresAt(d.yields.apply(now, fsm.List()), now, d.cfg.FlapHalfLife)
		if ts := Plan(now, nodes, items, d.cfg.PendingTimeout); len(ts) > 0 {
			for i := range ts {
				if ts[i].To == consensus.WorkAssigned {
					ts[i].LeaseExpiresAt = now.Add(d.cfg.Lease) // the fence
				}
			}
			if _, err := d.store.Apply(consensus.UpdateWork{At: now, Transitions: ts}, d.cfg.ApplyTimeout); err != nil {
				d.logger.Warn("applying placement failed", "err", err)
			} else {
				for _, t := range ts {
					d.metrics.recorded(t)
					// Placements are routine (debug); work failed for want
					// of capacity or attempts is worth a line.
					d.logger.Log(ctx, itemLevel(t.To), "work "+string(t.To), "work-id", t.WorkID, "attempt", t.Attempt,
						"agent-id", t.AgentID, "gpu", t.GPUIndex, "reason", t.Error)
				}
			}
			items = fsm.WorkByStatus(activeStatuses...)
		}
		// Work that fits no awake node but an asleep one wakes it.
		d.wake(ctx, now, fsm.List(), items)
		for _, w := range items {
			if w.Status != consensus.WorkAssigned && w.Status != consensus.WorkRunning {
				continue
			}
			key := fmt.Sprintf("%s/%d", w.WorkID, w.Attempts)
			mu.Lock()
			live := tracking[key]
			tracking[key] = true
			mu.Unlock()
			if live {
				continue
			}
			twg.Go(func() {
				defer func() {
					mu.Lock()
					delete(tracking, key)
					mu.Unlock()
				}()
				d.track(ctx, u, w.WorkID, w.Attempts)
			})
		}
		if now.Sub(lastGC) >= d.cfg.GCInterval {
			lastGC = now
			d.collectGarbage(now)
		}
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		_, _ = fsm.WaitIndex(wctx, index)
		cancel()
		// Batch bursts of registry changes.
		sleepCtx(ctx, planDelay)
	}
}

// gcBatch bounds the work_ids of one DeleteWork entry.
const gcBatch = 4096

// collectGarbage forgets the results expiredWork picks.
func (d *Dispatcher) collectGarbage(now time.Time) {
	ids := expiredWork(now, d.store.FSM().FinishedWork(), d.cfg.Retention, d.cfg.RetentionMax)
	for len(ids) > 0 {
		n := min(len(ids), gcBatch)
		if _, err := d.store.Apply(consensus.DeleteWork{At: now, WorkIDs: ids[:n]}, d.cfg.ApplyTimeout); err != nil {
			d.logger.Warn("deleting old work failed", "err", err)
			return
		}
		d.logger.Info("forgot finished work past its retention", "count", n,
			"retention", d.cfg.Retention, "retention-max", d.cfg.RetentionMax)
		ids = ids[n:]
	}
}

// expiredWork returns the work_ids, oldest result first, of the finished
// items to forget at now: those whose result was published and that
// finished more than retention ago, then the oldest published ones beyond
// retentionMax (0: no cap). A result still waiting for the broker (the
// outbox) is never forgotten.
func expiredWork(now time.Time, finished []consensus.FinishedRef, retention time.Duration, retentionMax int) []string {
	var published []consensus.FinishedRef
	for _, w := range finished {
		if w.Published {
			published = append(published, w)
		}
	}
	slices.SortFunc(published, func(a, b consensus.FinishedRef) int {
		if c := a.FinishedAt.Compare(b.FinishedAt); c != 0 {
			return c
		}
		return strings.Compare(a.WorkID, b.WorkID)
	})
	drop := 0
	for drop < len(published) && now.Sub(published[drop].FinishedAt) > retention {
		drop++
	}
	if retentionMax > 0 {
		drop = max(drop, len(published)-retentionMax)
	}
	ids := make([]string, drop)
	for i := range ids {
		ids[i] = published[i].WorkID
	}
	return ids
}

// callTimeout bounds one call to a desktop (a long poll gets its wait on
// top): a third of UnreachableAfter, at most 10 s, so that a desktop that
// accepts connections and answers nothing is found out within the bound.
func (d *Dispatcher) callTimeout() time.Duration {
	return min(10*time.Second, d.cfg.UnreachableAfter/3)
}

// pollWait is how long one long poll asks the desktop to wait for a change.
func (d *Dispatcher) pollWait() time.Duration { return min(d.cfg.LongPoll, d.cfg.UnreachableAfter/3) }

// track delivers one attempt to its desktop and follows it until its result
// is in the registry, or until the registry moves on (requeued elsewhere,
// or ctx ends). Every step is idempotent, so a new leader just repeats it.
// Each call's outcome feeds the reachability of the desktop (reach.go).
func (d *Dispatcher) track(ctx context.Context, u *updater, workID string, attempt int) {
	fsm := d.store.FSM()
	b := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	last := ""
	// answered: the desktop has answered for this attempt, so it may hold
	// it and must be told to drop it if the registry moves on.
	answered := false
	var agent string
	logger := d.logger.With("work-id", workID, "attempt", attempt)
	for ctx.Err() == nil {
		w, ok := fsm.GetWork(workID)
		if !ok || w.Attempts != attempt || (w.Status != consensus.WorkAssigned && w.Status != consensus.WorkRunning) {
			if answered {
				d.dropSuperseded(ctx, logger, agent, workID, attempt, w)
			}
			return
		}
		agent = w.AgentID
		node, _ := fsm.Get(w.AgentID)
		addr := node.WorkAddr
		if addr == "" {
			// Planner requeues the work if the node is gone for good.
			if !sleepCtx(ctx, b.next()) {
				return
			}
			continue
		}
		var (
			st  worker.State
			err error
		)
		callStart := d.now()
		if w.Status == consensus.WorkAssigned && last == "" {
			cctx, cancel := context.WithTimeout(ctx, d.callTimeout())
			st, err = d.client.Submit(cctx, node.Name, addr, worker.Assignment{WorkID: workID, Attempt: attempt, GPUIndex: w.GPUIndex,
				Payload: w.Payload, LeaseExpiresAt: w.LeaseExpiresAt})
			cancel()
		} else {
			cctx, cancel := context.WithTimeout(ctx, d.pollWait()+d.callTimeout())
			st, err = d.client.Get(cctx, node.Name, addr, workID, attempt, last, d.pollWait())
			cancel()
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil || isAnswer(err) {
			d.reach.answered(w.AgentID)
		} else {
			d.reach.failed(w.AgentID, callStart, d.now(), d.cfg.UnreachableAfter)
		}
		switch {
		case errors.Is(err, worker.ErrLeaseExpired):
			logger.Warn("the assignment reached the desktop after its lease; placing it again", "agent-id", w.AgentID,
				"lease-expires-at", w.LeaseExpiresAt)
			u.apply(ctx, logger, consensus.WorkTransition{WorkID: workID, To: consensus.WorkPending, Attempt: attempt,
				Error:    fmt.Sprintf("node %s got attempt %d after its lease (%s) and did not start it", w.AgentID, attempt, err),
				Deadline: d.now().Add(d.cfg.PendingTimeout)})
			return
		case errors.Is(err, worker.ErrUnknownWork), errors.Is(err, worker.ErrStaleAttempt), errors.Is(err, worker.ErrBadAssignment):
			logger.Warn("desktop does not have the work; placing it again", "agent-id", w.AgentID, "err", err)
			u.apply(ctx, logger, consensus.WorkTransition{WorkID: workID, To: consensus.WorkPending, Attempt: attempt,
				Error:    fmt.Sprintf("node %s lost or refused attempt %d: %v", w.AgentID, attempt, err),
				Deadline: d.now().Add(d.cfg.PendingTimeout)})
			return
		case err != nil:
			if last == "" || b.cur >= b.max {
				logger.Warn("cannot reach the desktop; retrying", "agent-id", w.AgentID, "addr", addr, "err", err)
			}
			last = "" // re-POST: idempotent, and tells a restarted desktop
			if !sleepCtx(ctx, b.next()) {
				return
			}
			continue
		}
		answered = true
		b.reset()
		last = st.Status
		// requeue puts the attempt back to pending (fenced; yielded: not
		// counted) and reports whether the delivery is over: the leader
		// recorded it, or ctx ended while backing off.
		requeue := func(yielded bool, why string) bool {
			if u.apply(ctx, logger, consensus.WorkTransition{WorkID: workID, To: consensus.WorkPending, Attempt: attempt,
				Yielded: yielded, Error: why, Deadline: d.now().Add(d.cfg.PendingTimeout)}) {
				_ = d.forget(ctx, node.Name, addr, workID, attempt)
				return true
			}
			last = ""
			return !sleepCtx(ctx, b.next())
		}
		switch {
		case st.Status == worker.StatusExpired:
			logger.Warn("the lease ran out before the desktop had a free slot; placing the work again", "agent-id", w.AgentID)
			if requeue(false, fmt.Sprintf("node %s did not start attempt %d: %s", w.AgentID, attempt, st.Error)) {
				return
			}
		case st.Status == worker.StatusYielded:
			// The desktop's owner came back (-owner-action requeue, or work
			// that arrived while the owner was active): the handler was
			// stopped or never started. The attempt is fenced like any
			// requeue but not counted.
			// (Uncounted needs every server on 0.2.0: an older one would
			// ignore Yielded and count it, and the replicas would differ.)
			uncounted := d.supports(consensus.CmdWakeNode)
			logger.Info("the desktop handed the work back for its owner; placing it again", "agent-id", w.AgentID, "counted", !uncounted)
			d.yields.mark(w.AgentID, d.now())
			if requeue(uncounted, fmt.Sprintf("node %s handed attempt %d back: %s", w.AgentID, attempt, st.Error)) {
				return
			}
		case st.Done():
			to := consensus.WorkSucceeded
			if st.Status != worker.StatusSucceeded {
				to = consensus.WorkFailed
			}
			// The AgentID makes it a node's result: the registry ignores it
			// if the attempt was fenced meanwhile (the loop then drops it).
			if u.apply(ctx, logger, consensus.WorkTransition{WorkID: workID, To: to, Attempt: attempt, AgentID: w.AgentID,
				ExitCode: st.ExitCode, Output: st.Output, Error: st.Error, StartedAt: st.StartedAt, FinishedAt: st.FinishedAt}) {
				_ = d.forget(ctx, node.Name, addr, workID, attempt)
				return
			}
			last = "" // not recorded: ask again
			if !sleepCtx(ctx, b.next()) {
				return
			}
		case st.Status == worker.StatusRunning && w.Status == consensus.WorkAssigned:
			u.apply(ctx, logger, consensus.WorkTransition{WorkID: workID, To: consensus.WorkRunning, Attempt: attempt, StartedAt: st.StartedAt})
		}
	}
}

// isAnswer reports whether err is the desktop's HTTP answer (it is
// reachable) rather than a failure to reach it.
func isAnswer(err error) bool {
	for _, e := range []error{worker.ErrUnknownWork, worker.ErrStaleAttempt, worker.ErrBadAssignment, worker.ErrLeaseExpired, worker.ErrHTTP} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (d *Dispatcher) forget(ctx context.Context, node, addr, workID string, attempt int) error {
	cctx, cancel := context.WithTimeout(ctx, d.callTimeout())
	defer cancel()
	return d.client.Forget(cctx, node, addr, workID, attempt)
}

// dropSuperseded is a tracker's end when the registry moved on from its
// attempt (fenced: requeued, failed, or placed again) after the desktop
// had answered for it: whatever the desktop reports of that attempt is
// ignored, and the desktop is told to drop it — unless it is unreachable,
// in which case the leader's probe drops it once it answers (reach.go).
func (d *Dispatcher) dropSuperseded(ctx context.Context, logger *slog.Logger, agent, workID string, attempt int, now consensus.WorkItem) {
	node, ok := d.store.FSM().Get(agent)
	logger.Info("attempt superseded; ignoring what the desktop reports of it and telling it to drop it",
		"agent-id", agent, "now-attempt", now.Attempts, "now-status", now.Status)
	if !ok || node.WorkAddr == "" || !node.Reachable() {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, d.callTimeout())
	defer cancel()
	if err := d.client.Drop(cctx, node.Name, node.WorkAddr, workID, attempt); err != nil {
		logger.Debug("telling the desktop to drop a superseded attempt failed", "agent-id", agent, "err", err)
	}
}

// maxUpdateBatch bounds the transitions of one UpdateWork entry.
const maxUpdateBatch = 256

// pendingTransition is a tracker's transition waiting for its raft entry;
// done receives whether that entry committed.
type pendingTransition struct {
	t    consensus.WorkTransition
	done chan bool
}

// updater writes the trackers' transitions: every transition that arrives
// while one entry is being applied goes into the next, so the registry
// takes one raft round trip per batch rather than per transition (and the
// planner and the outbox, which rescan on every index change, wake once).
type updater struct {
	d  *Dispatcher
	in chan pendingTransition
}

func (u *updater) run(ctx context.Context) {
	for {
		var batch []pendingTransition
		select {
		case <-ctx.Done():
			return
		case p := <-u.in:
			batch = append(batch, p)
		}
	more:
		for len(batch) < maxUpdateBatch {
			select {
			case p := <-u.in:
				batch = append(batch, p)
			default:
				break more
			}
		}
		ts := make([]consensus.WorkTransition, len(batch))
		for i, p := range batch {
			ts[i] = p.t
		}
		_, err := u.d.store.Apply(consensus.UpdateWork{At: u.d.now(), Transitions: ts}, u.d.cfg.ApplyTimeout)
		if err != nil {
			u.d.logger.Warn("recording work progress failed", "err", err, "count", len(ts))
		}
		for _, p := range batch {
			p.done <- err == nil // buffered
		}
	}
}

// apply writes one transition (batched with others); it reports whether
// its entry committed and the registry took it (not a transition the FSM
// ignored because the attempt was fenced meanwhile, or a repeat).
func (u *updater) apply(ctx context.Context, logger *slog.Logger, t consensus.WorkTransition) bool {
	p := pendingTransition{t: t, done: make(chan bool, 1)}
	select {
	case u.in <- p:
	case <-ctx.Done():
		return false
	}
	// Once taken, the updater always answers: wait for it even when ctx
	// ends, so that what is logged is what happened.
	if !<-p.done {
		return false
	}
	if w, ok := u.d.store.FSM().GetWork(t.WorkID); !ok || w.Attempts != t.Attempt || w.Status != t.To {
		logger.Debug("the registry did not take the transition: the attempt moved on", "to", t.To)
		return false
	}
	u.d.metrics.recorded(t)
	logger.Log(ctx, itemLevel(t.To), "work "+string(t.To), "exit-code", t.ExitCode, "reason", t.Error)
	return true
}

// itemLevel is the log level of one item's transition: at hundreds of
// items a second, the routine steps are debug lines and only failures are
// info.
func itemLevel(to consensus.WorkStatus) slog.Level {
	if to == consensus.WorkFailed {
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// ---- helpers ----

// backoff is exponential with equal jitter: each wait is half the current
// step plus a random part of the other half (50–100 ms at first, doubling
// to 5–10 s). Not full jitter (a random wait in [0, step]): only the leader
// dials the broker, so there is no crowd of clients to spread out, and the
// fixed half keeps a broker that is down from being redialled in a tight
// loop when the random part comes out near zero.
type backoff struct{ min, max, cur time.Duration }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleepCtx waits for d or ctx; it reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
