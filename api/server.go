// Package api is Chiffon's HTTP API: capacity queries, the registry, work
// status, leader and peer status, operator raft and snapshot, health,
// readiness and Prometheus metrics, served by every orchestrator.
//
// Any orchestrator answers; a client never needs to know which one leads.
// A read in the default mode is answered from the leader's state: a follower
// asks the leader's HTTP API (pooled keep-alive connections) for its read
// index, catches up to it and renders the answer from its own replica, or
// relays the leader's answer; while no leader is known (an election) it
// waits, up to Config.LeaderWait, instead of failing. A forwarded request whose leader
// dies on the way, or that raft stops following (leaderwatch.go), is
// retried against the next leader; reads are idempotent. ?stale answers from the local replica; ?consistent has the
// leader confirm with a quorum that it still leads. See docs/API.md.
//
// The package knows nothing of gossip or of the node that embeds it: it
// reads the registry, its work items and raft through the Registry,
// WorkReader, Raft and SnapshotStore interfaces, maps the raft leader's ID
// to its HTTP address with Config.LeaderHTTPAddr, and asks
// Config.LeaderEstablished whether the node's leadership owner has run
// this term's Barrier. It writes package apitype's wire types, converting
// registry records in one place (convert.go). Server.RemovePeer is the
// node's own leader-forwarded operation (a leaving orchestrator removes
// itself).
//
// Size: about 2,900 lines, over the house's ~1,500, on purpose. Every file
// here serves one HTTP surface whose routes share the same machinery: the
// consistency modes and the read index (readindex.go), blocking queries,
// forwarding to the leader with its retries, following raft's leader
// (server.go, leaderop.go, leaderwatch.go), authentication, the route
// table and its metrics (routes.go, metrics.go).
// Splitting the handlers from that machinery would export it only so that
// the pieces could call each other. What can stand alone already does: the
// wire types (api/apitype), the client (api/client, which the CLI links
// without this package) and the dashboard (api/ui).
package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/fleet"
)

// Sentinel errors.
var (
	// ErrInvalidConfig is returned by New for an unusable Config.
	ErrInvalidConfig = errors.New("invalid api config")
	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("api server already started")
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("api server closed")
	// ErrNoLeader means no leader emerged within Config.LeaderWait; the HTTP
	// answer is 503 with Retry-After.
	ErrNoLeader = errors.New("no raft leader")
	// ErrNoSuchPeer means the raft server to remove is not in the
	// configuration (Server.RemovePeer; the HTTP answer is 404).
	ErrNoSuchPeer = errors.New("no raft peer")
	// ErrLeaderChanged ends a round trip to the leader (a read index, a
	// relayed request) when raft reports another leader than the node
	// asked; the request is retried against the new leader.
	ErrLeaderChanged = errors.New("raft leader changed")
	// ErrApplyBehind means the leader's registry did not apply its raft
	// commit index within Config.ReadIndexTimeout, so it could not answer
	// a default or consistent read (or hand out a read index); the HTTP
	// answer is 503 with Retry-After.
	ErrApplyBehind = errors.New("the leader's registry has not applied its commit index")
)

// Registry is the read side of the replicated registry that the API
// serves. consensus.FSM implements it; its methods must be safe for
// concurrent use and return copies.
type Registry interface {
	// Get returns the record for an agent ID.
	Get(agentID string) (consensus.Record, bool)
	// List returns every record, sorted by agent ID.
	List() []consensus.Record
	// Index returns the raft index of the last applied registry change.
	Index() uint64
	// WaitIndex blocks until Index passes after or ctx ends, and returns
	// the index it saw.
	WaitIndex(ctx context.Context, after uint64) (uint64, error)
	// Counts returns the number of records in each status.
	Counts() map[consensus.Status]int
}

// Raft is what the API needs of the local raft server. consensus.Store
// implements it.
type Raft interface {
	// IsLeader reports whether this node leads now.
	IsLeader() bool
	// Leader returns the leader's raft ID and address, "" when unknown.
	Leader() (id, addr string)
	// VerifyLeader confirms leadership with a quorum (consistent reads).
	VerifyLeader() error
	// LastContact returns when this node last heard from the leader.
	LastContact() time.Time
	// Servers returns the raft configuration.
	Servers() ([]consensus.Server, error)
	// ID returns this node's raft ID.
	ID() string
	// Stats returns raft's statistics (state, term, commit_index,
	// applied_index, last_log_index, ...).
	Stats() map[string]string
}

var (
	_ Registry = (*consensus.FSM)(nil)
	_ Raft     = (*consensus.Store)(nil)
)

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// Addr is the address to listen on; DefaultConfig gives
	// 127.0.0.1:8480. Ignored when Listener is set.
	Addr string
	// Listener, if set, is served instead of listening on Addr; the Server
	// owns it and closes it on Close.
	Listener net.Listener

	// Registry is the local replica of the registry. Required.
	Registry Registry
	// Raft is the local raft server. Required.
	Raft Raft
	// LeaderHTTPAddr maps the raft leader's ID (which is its agent_id) to
	// its HTTP API address, host:port; it must also map this node's own ID
	// (GET /v1/status/leader on the leader). The node resolves it from
	// gossip tags. It is called on every round trip to the leader (a
	// read-index batch or a relayed request) from many goroutines, so it
	// should be cheap and safe for concurrent use. Required.
	LeaderHTTPAddr func(leaderID string) (string, error)
	// LeaderEstablished reports whether this node, while it leads, has
	// applied everything its predecessors committed (its term's raft
	// Barrier succeeded). The server answers default and consistent reads
	// from its own state only when Raft.IsLeader and this are both true, so
	// a freshly elected leader never answers with less than its predecessor
	// committed. The server runs no Barrier itself: the node's leadership
	// owner runs one per term and sets what this reads. It is called on
	// every such read, so it should be cheap (an atomic). Required.
	LeaderEstablished func() bool
	// RemovePeer removes a raft server; DELETE /v1/operator/raft/peers/{id}
	// and Server.RemovePeer call it on the leader. Nil answers that
	// endpoint with 501.
	RemovePeer func(id string) error

	// Token, when set, is required on every request except GET /healthz
	// and the dashboard's static files under /ui/, as
	// "Authorization: Bearer <token>" or "X-Chiffon-Token: <token>".
	// Forwarded requests carry it.
	Token string
	// TLS, when set, serves HTTPS with it. To require client certificates
	// set ClientAuth and ClientCAs (ServerTLSConfig does).
	TLS *tls.Config
	// ForwardTLS is the client side of TLS for requests forwarded to the
	// leader: the CA that signed the orchestrators' certificates and, when
	// they require one, this node's client certificate. Forwarding uses
	// https when ForwardTLS or TLS is set; with only TLS set it trusts the
	// system roots.
	ForwardTLS *tls.Config

	// LeaderWait bounds how long a default or consistent read waits for a
	// leader (during an election) before answering 503. Default 5 s.
	LeaderWait time.Duration
	// ForwardTimeout bounds one forwarded attempt, beyond a blocking
	// query's own wait. Default 5 s.
	ForwardTimeout time.Duration
	// ReadIndexTimeout bounds one read-index round trip to the leader and
	// every dial to it; the read is then retried (within LeaderWait), not
	// failed. Any round trip to the leader also ends as soon as raft
	// reports another leader, so this matters for a leader that does not
	// answer while no new one is known yet. The node
	// sets it to twice raft's heartbeat timeout: the longest a follower
	// waits for a silent leader before it stands for election. Default 1 s
	// (raft's default 500 ms heartbeat timeout).
	ReadIndexTimeout time.Duration
	// DefaultBlockingWait is the wait of a blocking query (?index=) that
	// gives no ?wait=. Default 5 min, as Consul.
	DefaultBlockingWait time.Duration
	// MaxBlockingWait caps ?wait=. Default 5 min.
	MaxBlockingWait time.Duration
	// MaxIdleConnsPerHost is the forwarding client's keep-alive pool size
	// towards the leader. Default 256.
	MaxIdleConnsPerHost int
	// ReadyMaxStale is how long a follower may go without hearing from the
	// leader and still be ready. Default 5 s.
	ReadyMaxStale time.Duration
	// ReadyMaxLag is how many committed entries a node may have left to
	// apply and still be ready. Default 64.
	ReadyMaxLag uint64

	// Work is the registry's work items, which GET /v1/work and
	// GET /v1/work/{work_id} serve (with the consistency modes of
	// /v1/agents). Nil answers them 404.
	Work WorkReader

	// Snapshots saves and restores the registry for GET and PUT
	// /v1/operator/snapshot (on the leader). Nil answers them 404.
	Snapshots SnapshotStore

	// FlapHalfLife is the half-life of the agents' flap scores (the
	// leader's -flap-half-life): GET /v1/agents and /v1/agents/{id} show
	// the score decayed to the moment of the answer. Zero shows it as
	// stored, as of the agent's status_changed_at. Default
	// consensus.DefaultFlapHalfLife.
	FlapHalfLife time.Duration

	// Reserved, if set, returns the capacity held by placed work, by agent
	// ID; the capacity answers subtract it. It is called once per registry
	// index (the work items live in the same registry).
	Reserved func() map[string]Reservation

	// Mounts are further endpoints served behind the same token, metrics
	// and JSON errors (GET and HEAD unless Mount.Methods says otherwise):
	// the node mounts Go's profiler here with -enable-debug.
	Mounts []Mount

	// Metrics is the Prometheus registry that GET /metrics exposes and the
	// server registers its own metrics in. Nil creates one with the Go and
	// process collectors; the node may register more (gossip) through
	// Server.Registerer.
	Metrics *prometheus.Registry
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Reservation is the capacity held on one agent by work placed there.
type Reservation struct {
	Items    int
	CPUCores float64
	// GPUVRAMGB is by GPU index; index -1 when the agent reports only
	// aggregate GPU figures.
	GPUVRAMGB map[int]float64
	// VRAMHolds are the same VRAM reservations one by one, by GPU index,
	// for the VRAM ledger (fleet.GPULedger), which subtracts them.
	VRAMHolds map[int][]fleet.VRAMHold
}

// Mount is one extra endpoint: Name labels its metrics, Patterns are
// ServeMux patterns, Methods the methods allowed on them (nil: GET and
// HEAD; others get a JSON 405), Handler answers them.
//
// By default the server does not forward mounted requests to the leader:
// the handler decides. A Registry mount is a read of the raft registry
// alone and is served like /v1/agents: in the default mode a follower
// answers once its replica has caught up with the leader's read index (so
// a client reads its own writes on any orchestrator), ?stale answers from
// the local replica, ?consistent confirms leadership first, and ?index=
// with ?wait= blocks until the registry passes that index. Params are the
// handler's own query parameters; any other than these and the modes' is
// refused with 400.
type Mount struct {
	Name     string
	Patterns []string
	Methods  []string
	Handler  http.Handler
	Registry bool
	Params   []string
}

// DefaultConfig returns a Config with every default filled in; the caller
// still sets Registry, Raft, LeaderHTTPAddr and LeaderEstablished.
func DefaultConfig() Config {
	return Config{
		Addr:                "127.0.0.1:8480",
		LeaderWait:          5 * time.Second,
		ForwardTimeout:      5 * time.Second,
		ReadIndexTimeout:    time.Second,
		DefaultBlockingWait: 5 * time.Minute,
		MaxBlockingWait:     5 * time.Minute,
		MaxIdleConnsPerHost: 256,
		ReadyMaxStale:       5 * time.Second,
		ReadyMaxLag:         64,
		FlapHalfLife:        consensus.DefaultFlapHalfLife,
	}
}

func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.Registry == nil:
		return bad("Registry is nil")
	case c.Raft == nil:
		return bad("Raft is nil")
	case c.LeaderHTTPAddr == nil:
		return bad("LeaderHTTPAddr is nil")
	case c.LeaderEstablished == nil:
		return bad("LeaderEstablished is nil")
	case c.Listener == nil && c.Addr == "":
		return bad("Addr is empty")
	case c.LeaderWait <= 0, c.ForwardTimeout <= 0, c.ReadIndexTimeout <= 0, c.MaxBlockingWait <= 0, c.DefaultBlockingWait <= 0:
		return bad("LeaderWait, ForwardTimeout, ReadIndexTimeout, DefaultBlockingWait and MaxBlockingWait must be positive")
	case c.MaxIdleConnsPerHost <= 0:
		return bad("MaxIdleConnsPerHost must be positive")
	case c.ReadyMaxStale <= 0:
		return bad("ReadyMaxStale must be positive")
	}
	if c.Listener == nil {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			return bad("Addr %q: %v", c.Addr, err)
		}
	}
	if c.TLS != nil && len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil {
		return bad("TLS has no certificate")
	}
	return nil
}

// Server is the HTTP API of one orchestrator. Create it with New, serve
// with Start, stop with Close.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	reg     Registry
	raft    Raft
	views   viewCache
	handler http.Handler
	metrics *metrics
	prom    *prometheus.Registry

	// Forwarding to the leader: one client and Transport for every request,
	// so connections to the leader are kept alive and reused.
	transport *http.Transport
	client    *http.Client
	scheme    string

	// baseCtx is every request's parent context; cancel ends blocking
	// queries and forwarding waits on Close.
	baseCtx context.Context
	cancel  context.CancelFunc

	// readDefault and readConsistent batch followers' read-index round
	// trips to the leader, one per consistency mode.
	readDefault, readConsistent readIndexBatcher
	// leaders ends round trips to a leader that raft no longer follows.
	leaders leaderWatch

	mu sync.Mutex
	// The fields below are guarded by mu.
	started, closed bool
	srv             *http.Server
	ln              net.Listener
	serveDone       chan struct{}
}

// New validates cfg and returns a Server that is not yet listening. It
// opens nothing.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "api")
	s := &Server{
		cfg:    cfg,
		logger: logger,
		reg:    cfg.Registry,
		raft:   cfg.Raft,
		scheme: "http",
	}
	s.views.reg = cfg.Registry
	s.views.reserved = cfg.Reserved
	s.baseCtx, s.cancel = context.WithCancel(context.Background())

	fwdTLS := cfg.ForwardTLS
	if fwdTLS == nil && cfg.TLS != nil {
		fwdTLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if fwdTLS != nil {
		s.scheme = "https"
	}
	// A leader that does not take a connection within a read-index
	// timeout is as good as gone (see ReadIndexTimeout).
	s.transport = &http.Transport{
		Proxy:                 nil, // node to node: never through a proxy
		DialContext:           (&net.Dialer{Timeout: cfg.ReadIndexTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       fwdTLS,
		TLSHandshakeTimeout:   5 * time.Second,
		MaxIdleConns:          4 * cfg.MaxIdleConnsPerHost,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // blocking queries: bounded per attempt by the request's context
		DisableCompression:    true,
	}
	s.client = &http.Client{
		Transport: s.transport,
		// The leader never redirects; do not follow anything.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	s.prom = cfg.Metrics
	if s.prom == nil {
		s.prom = newDefaultRegistry()
	}
	m, err := newMetrics(s.prom, s)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	s.metrics = m
	s.handler = s.routes()
	return s, nil
}

// Handler returns the server's HTTP handler, for embedding or for tests
// with httptest.
func (s *Server) Handler() http.Handler { return s.handler }

// Registerer is where the node registers further Prometheus collectors
// (gossip, probe) to be exposed on GET /metrics.
func (s *Server) Registerer() prometheus.Registerer { return s.prom }

// Start listens (on Config.Listener or Config.Addr) and serves in the
// background until Close. ctx bounds only the start.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return ErrAlreadyStarted
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ln := s.cfg.Listener
	if ln == nil {
		var lc net.ListenConfig
		var err error
		if ln, err = lc.Listen(ctx, "tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
		}
	}
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return s.baseCtx },
		ErrorLog:          log.New(slogWriter{s.logger}, "", 0),
	}
	s.serveDone = make(chan struct{})
	s.started = true
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("http server stopped", "err", err)
		}
	}(s.srv, s.serveDone)
	s.logger.Info("http api listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS != nil, "token", s.cfg.Token != "")
	return nil
}

// Addr returns the address the server listens on (useful with port 0), or
// "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops the server: it ends blocking queries and forwarding waits,
// lets in-flight answers finish for up to 2 s, then closes every
// connection, and drops the forwarding pool. It is safe to call more than
// once.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.cancel()
	s.leaders.close()
	var err error
	if s.started {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if serr := s.srv.Shutdown(ctx); serr != nil {
			err = s.srv.Close()
		}
		cancel()
		<-s.serveDone
		s.logger.Info("http api stopped")
	} else if s.cfg.Listener != nil {
		err = s.cfg.Listener.Close()
	}
	s.transport.CloseIdleConnections()
	return err
}

// slogWriter adapts net/http's *log.Logger output to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	n := len(p)
	if n > 0 && p[n-1] == '\n' {
		p = p[:n-1]
	}
	w.l.Debug("http server", "line", string(p))
	return n, nil
}
