package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

const (
	// raftDBFile is the BoltDB log and stable store, under <DataDir>/raft.
	raftDBFile = "raft.db"
	// logCacheSize is how many recent log entries are kept in memory in
	// front of BoltDB, to spare replication a disk read.
	logCacheSize = 512
	// tcpMaxPool is how many idle connections the TCP transport keeps per
	// peer.
	tcpMaxPool = 3
	// boltOpenTimeout bounds the wait for BoltDB's file lock, so a second
	// process on the same data dir fails instead of hanging.
	boltOpenTimeout = 5 * time.Second
	// operatorTimeout bounds membership changes, snapshots and restores.
	operatorTimeout = 30 * time.Second
	// notifyBuffer is the size of raft's NotifyCh. The drain goroutine
	// empties it at once; the buffer only absorbs bursts.
	notifyBuffer = 16
)

// Store is one raft server holding the registry. Create it with New, start
// it with Open, and make a new cluster's first member with Bootstrap. Reads
// go to FSM(); writes (Apply) succeed only on the leader.
//
// A Store reopened on the same DataDir keeps its log, snapshots and term,
// and rejoins its cluster; the caller must give it the same NodeID (see
// LoadOrCreateNodeID).
type Store struct {
	cfg    Config
	logger *slog.Logger
	fsm    *FSM

	// notifyCh is raft's Config.NotifyCh; drainNotify empties it.
	notifyCh chan bool
	// leaderCh holds the latest leadership value for LeaderCh consumers
	// (capacity 1, coalescing); drainNotify is its only sender and closes
	// it on Close.
	leaderCh chan bool
	// stopDrain ends drainNotify; drainDone is closed when it has ended.
	stopDrain chan struct{}
	drainDone chan struct{}
	// health records log appends and the leader's commit index (see
	// Health); stopForward ends the transport watcher's forward goroutine,
	// forwardDone is closed when it has ended.
	health      *persistHealth
	stopForward chan struct{}
	forwardDone chan struct{}

	mu sync.Mutex
	// opened and closed record the lifecycle; guarded by mu.
	opened, closed bool
	// closeErr is Close's result, returned by later calls; guarded by mu.
	closeErr error
	// The fields below are set once by Open under mu and read-only after;
	// read them through running().
	raft      *raft.Raft
	trans     raft.Transport
	ownTrans  io.Closer // the transport if we made it, else nil
	bolt      *raftboltdb.BoltStore
	logStore  raft.LogStore
	stable    raft.StableStore
	snapshots raft.SnapshotStore
}

// New validates cfg and returns a Store that is not yet running. It opens
// nothing.
func New(cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "consensus", "node-id", cfg.NodeID)
	return &Store{
		cfg:         cfg,
		logger:      logger,
		fsm:         NewFSM(),
		notifyCh:    make(chan bool, notifyBuffer),
		leaderCh:    make(chan bool, 1),
		stopDrain:   make(chan struct{}),
		drainDone:   make(chan struct{}),
		health:      &persistHealth{logger: logger},
		stopForward: make(chan struct{}),
		forwardDone: make(chan struct{}),
	}, nil
}

// Open opens the stores and the transport and starts raft. A node with
// existing state resumes it; a new node waits for Bootstrap or to be added
// by a cluster's leader.
func (s *Store) Open() (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.opened:
		return ErrAlreadyOpen
	}
	hl := newHCLogger(s.logger, "raft")

	// Undo whatever was opened if a later step fails.
	var closers []io.Closer
	defer func() {
		if err != nil {
			for _, c := range slices.Backward(closers) {
				_ = c.Close()
			}
		}
	}()

	if s.cfg.InMemory {
		store := raft.NewInmemStore()
		s.logStore, s.stable = s.watchLog(store), store
		s.snapshots = raft.NewInmemSnapshotStore()
	} else {
		dir := filepath.Join(s.cfg.DataDir, "raft")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create raft dir: %w", err)
		}
		bolt, err := raftboltdb.New(raftboltdb.Options{
			Path:        filepath.Join(dir, raftDBFile),
			BoltOptions: &bbolt.Options{Timeout: boltOpenTimeout},
		})
		if err != nil {
			return fmt.Errorf("open raft log: %w", err)
		}
		closers = append(closers, bolt)
		cache, err := raft.NewLogCache(logCacheSize, s.watchLog(bolt))
		if err != nil {
			return fmt.Errorf("create log cache: %w", err)
		}
		snaps, err := raft.NewFileSnapshotStoreWithLogger(s.cfg.DataDir, s.cfg.SnapshotRetain, hl.Named("snapshot"))
		if err != nil {
			return fmt.Errorf("open snapshot store: %w", err)
		}
		s.bolt, s.logStore, s.stable, s.snapshots = bolt, cache, bolt, snaps
	}

	trans := s.cfg.Transport
	if trans == nil {
		var advertise net.Addr
		if s.cfg.AdvertiseAddr != "" {
			if advertise, err = net.ResolveTCPAddr("tcp", s.cfg.AdvertiseAddr); err != nil {
				return fmt.Errorf("resolve advertise address: %w", err)
			}
		}
		var tcp *raft.NetworkTransport
		if s.cfg.TLS != nil {
			tcp, err = newTLSTransport(&s.cfg, advertise, s.logger, hl)
		} else {
			tcp, err = raft.NewTCPTransportWithLogger(s.cfg.BindAddr, advertise, tcpMaxPool, s.cfg.TransportTimeout, hl.Named("transport"))
		}
		if err != nil {
			return fmt.Errorf("open raft transport: %w", err)
		}
		closers = append(closers, tcp)
		trans, s.ownTrans = tcp, tcp
	}
	s.trans = trans

	rc := s.cfg.raftConfig()
	rc.Logger = hl
	rc.NotifyCh = s.notifyCh
	if _, ok := trans.(raft.WithPreVote); !ok {
		rc.PreVoteDisabled = true // the watcher must not claim what trans lacks
	}
	watched := newWatchedTransport(trans, s.health)
	r, err := raft.NewRaft(rc, s.fsm, s.logStore, s.stable, s.snapshots, watched)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	s.raft = r
	s.opened = true
	go s.drainNotify()
	go func() {
		defer close(s.forwardDone)
		watched.forward(s.stopForward)
	}()
	s.logger.Info("raft started", "addr", trans.LocalAddr(), "data-dir", s.cfg.DataDir, "in-memory", s.cfg.InMemory,
		"tls", s.cfg.TLS != nil && s.cfg.Transport == nil)
	return nil
}

// watchLog wraps the store raft appends to (after Config.WrapLogStore's
// own wrapper) so that Health knows whether appends succeed. It sits under
// the log cache, which reports the store's errors as text.
func (s *Store) watchLog(ls raft.LogStore) raft.LogStore {
	if s.cfg.WrapLogStore != nil {
		ls = s.cfg.WrapLogStore(ls)
	}
	return &healthLog{LogStore: ls, h: s.health}
}

// drainNotify forwards raft's leadership notifications to leaderCh so that
// raft never blocks on a slow consumer: leaderCh holds only the latest
// value.
func (s *Store) drainNotify() {
	defer close(s.drainDone)
	publish := func(v bool) {
		s.logger.Info("leadership changed", "leader", v)
		select {
		case <-s.leaderCh: // drop the stale value
		default:
		}
		select {
		case s.leaderCh <- v:
		default: // cannot happen: we are the only sender
		}
	}
	for {
		select {
		case v := <-s.notifyCh:
			publish(v)
		case <-s.stopDrain:
			// raft has shut down: pass on what it sent last, then close.
			for {
				select {
				case v := <-s.notifyCh:
					publish(v)
				default:
					close(s.leaderCh)
					return
				}
			}
		}
	}
}

// running returns raft, or ErrNotOpen / ErrClosed.
func (s *Store) running() (*raft.Raft, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, ErrClosed
	case !s.opened:
		return nil, ErrNotOpen
	}
	return s.raft, nil
}

// HasState reports whether this node has raft state: it was bootstrapped,
// or a leader added it and replicated to it. A node with state must never
// bootstrap again; -bootstrap-expect uses this to tell new clusters from
// existing ones.
func (s *Store) HasState() (bool, error) {
	if _, err := s.running(); err != nil {
		return false, err
	}
	ok, err := raft.HasExistingState(s.logStore, s.stable, s.snapshots)
	if err != nil {
		return false, fmt.Errorf("check raft state: %w", err)
	}
	return ok, nil
}

// Bootstrap makes this node the first member of a new cluster whose voters
// are servers; with no servers, it is the only voter (at its own transport
// address). It must follow Open and returns ErrAlreadyBootstrapped when the
// node already has raft state, so calling it on every start is safe.
func (s *Store) Bootstrap(servers []raft.Server) error {
	r, err := s.running()
	if err != nil {
		return err
	}
	existing, err := raft.HasExistingState(s.logStore, s.stable, s.snapshots)
	if err != nil {
		return fmt.Errorf("bootstrap: check raft state: %w", err)
	}
	if existing {
		return ErrAlreadyBootstrapped
	}
	if len(servers) == 0 {
		servers = []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(s.cfg.NodeID), Address: s.trans.LocalAddr()}}
	}
	if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		return fmt.Errorf("bootstrap: %w", mapRaftErr(err))
	}
	s.logger.Info("bootstrapped raft cluster", "servers", len(servers))
	return nil
}

// Apply encodes cmd and commits it through raft, returning the log index it
// was applied at. It fails with ErrNotLeader on a follower, ErrTimeout if
// raft did not take the entry within timeout, and ErrBadCommand for a
// command that breaks its rules. raft.ErrLeadershipLost means the entry may
// or may not commit.
func (s *Store) Apply(cmd Command, timeout time.Duration) (uint64, error) {
	b, err := EncodeCommand(cmd)
	if err != nil {
		return 0, err
	}
	return s.apply(b, timeout)
}

// ApplyEncoded commits an entry that EncodeCommand produced, e.g. one a
// follower forwarded to the leader. It decodes the entry first, so bytes
// that every replica's FSM would panic on never reach the log.
func (s *Store) ApplyEncoded(b []byte, timeout time.Duration) (uint64, error) {
	if _, err := DecodeCommand(b); err != nil {
		return 0, err
	}
	return s.apply(b, timeout)
}

func (s *Store) apply(b []byte, timeout time.Duration) (uint64, error) {
	r, err := s.running()
	if err != nil {
		return 0, err
	}
	f := r.Apply(b, timeout)
	if err := f.Error(); err != nil {
		return 0, fmt.Errorf("apply %s: %w", CommandType(b[0]), mapRaftErr(err))
	}
	if err, ok := f.Response().(error); ok {
		return f.Index(), fmt.Errorf("apply %s: %w", CommandType(b[0]), err)
	}
	return f.Index(), nil
}

// Barrier blocks until every entry before it has been applied to the local
// FSM. Only the leader may call it: a new leader calls it before reading
// the registry to act on it.
func (s *Store) Barrier(timeout time.Duration) error {
	r, err := s.running()
	if err != nil {
		return err
	}
	if err := r.Barrier(timeout).Error(); err != nil {
		return fmt.Errorf("barrier: %w", mapRaftErr(err))
	}
	return nil
}

// VerifyLeader confirms with a quorum that this node is still the leader,
// for linearizable ("consistent") reads. It returns ErrNotLeader if not.
func (s *Store) VerifyLeader() error {
	r, err := s.running()
	if err != nil {
		return err
	}
	if err := r.VerifyLeader().Error(); err != nil {
		return fmt.Errorf("verify leader: %w", mapRaftErr(err))
	}
	return nil
}

// AddVoter adds a voting server to the cluster, or updates its address.
// Only the leader may call it.
func (s *Store) AddVoter(id, addr string) error {
	r, err := s.running()
	if err != nil {
		return err
	}
	if err := r.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, operatorTimeout).Error(); err != nil {
		return fmt.Errorf("add voter %s: %w", id, mapRaftErr(err))
	}
	s.logger.Info("added raft voter", "id", id, "addr", addr)
	return nil
}

// ProbePeer checks that addr answers raft's transport: it sends one
// pre-vote request (term 0, which no server acts on: a pre-vote changes no
// state, and a term-0 one is never granted against a real log) and waits
// for any answer. Over TLS the dial also requires the peer to hold a
// server certificate of the domain. The leader calls it before AddVoter so
// that no voter points at nothing. It returns nil when the peer answered,
// whatever it answered.
func (s *Store) ProbePeer(id, addr string) error {
	if _, err := s.running(); err != nil {
		return err
	}
	pv, ok := s.trans.(raft.WithPreVote)
	if !ok {
		return fmt.Errorf("probe %s: %w: transport cannot send pre-votes", addr, ErrInvalidConfig)
	}
	req := &raft.RequestPreVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax,
		ID: []byte(s.cfg.NodeID), Addr: []byte(s.trans.LocalAddr())}}
	var resp raft.RequestPreVoteResponse
	if err := pv.RequestPreVote(raft.ServerID(id), raft.ServerAddress(addr), req, &resp); err != nil {
		return fmt.Errorf("probe raft peer %s at %s: %w", id, addr, err)
	}
	return nil
}

// RemoveServer removes a server from the cluster. Only the leader may call
// it; a leader removing itself steps down.
func (s *Store) RemoveServer(id string) error {
	r, err := s.running()
	if err != nil {
		return err
	}
	if err := r.RemoveServer(raft.ServerID(id), 0, operatorTimeout).Error(); err != nil {
		return fmt.Errorf("remove server %s: %w", id, mapRaftErr(err))
	}
	s.logger.Info("removed raft server", "id", id)
	return nil
}

// Server is a member of the raft configuration.
type Server struct {
	// ID is the server's raft ID (its node ID).
	ID string `json:"id"`
	// Address is the server's raft address.
	Address string `json:"address"`
	// Voter is false for non-voters and servers being staged.
	Voter bool `json:"voter"`
	// Leader is true for the server this node believes leads.
	Leader bool `json:"leader"`
}

// Servers returns the latest raft configuration as this node knows it,
// sorted by ID.
func (s *Store) Servers() ([]Server, error) {
	r, err := s.running()
	if err != nil {
		return nil, err
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("get raft configuration: %w", mapRaftErr(err))
	}
	_, leaderID := r.LeaderWithID()
	var out []Server
	for _, srv := range f.Configuration().Servers {
		out = append(out, Server{
			ID:      string(srv.ID),
			Address: string(srv.Address),
			Voter:   srv.Suffrage == raft.Voter,
			Leader:  srv.ID == leaderID,
		})
	}
	slices.SortFunc(out, func(a, b Server) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Leader returns the ID and address of the current leader as this node
// knows it, or empty strings when there is none.
func (s *Store) Leader() (id, addr string) {
	r, err := s.running()
	if err != nil {
		return "", ""
	}
	a, i := r.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node is the leader right now. Leadership can
// be lost at any moment; writes find out through ErrNotLeader.
func (s *Store) IsLeader() bool {
	r, err := s.running()
	return err == nil && r.State() == raft.Leader
}

// LastContact returns when this node last heard from the leader. It is
// meaningful on followers (the staleness of their reads); a leader reports
// the time it was elected.
func (s *Store) LastContact() time.Time {
	r, err := s.running()
	if err != nil {
		return time.Time{}
	}
	return r.LastContact()
}

// AppliedIndex returns the index of the last log entry applied locally,
// counting raft's own entries (configuration changes, no-ops) too; the
// registry's index is FSM().Index().
func (s *Store) AppliedIndex() uint64 {
	r, err := s.running()
	if err != nil {
		return 0
	}
	return r.AppliedIndex()
}

// ID returns this server's raft ID.
func (s *Store) ID() string { return s.cfg.NodeID }

// Addr returns the transport's address (useful with port 0), or "" before
// Open.
func (s *Store) Addr() string {
	if _, err := s.running(); err != nil {
		return ""
	}
	return string(s.trans.LocalAddr())
}

// FSM returns the local registry. Reads are as fresh as this node: call
// VerifyLeader (or Barrier) on the leader first for consistent reads.
func (s *Store) FSM() *FSM { return s.fsm }

// LeaderCh delivers true when this node becomes leader and false when it
// stops being leader. It holds only the latest value, so a slow consumer
// sees where leadership stands now, not every transition; two trues in a row
// mean it was lost and regained in between. It is closed by Close. There
// should be one consumer (the leader loop).
func (s *Store) LeaderCh() <-chan bool { return s.leaderCh }

// Stats returns raft's statistics plus the registry's size and index.
func (s *Store) Stats() map[string]string {
	r, err := s.running()
	if err != nil {
		return map[string]string{"state": "Shutdown"}
	}
	st := r.Stats()
	st["registry_nodes"] = strconv.Itoa(s.fsm.Len())
	st["registry_index"] = strconv.FormatUint(s.fsm.Index(), 10)
	return st
}

// SaveSnapshot takes a raft snapshot and writes the registry in it to w, for
// operator backups. The snapshot is this node's state: on a follower it may
// lag the leader.
func (s *Store) SaveSnapshot(w io.Writer) error {
	r, err := s.running()
	if err != nil {
		return err
	}
	f := r.Snapshot()
	switch err := f.Error(); {
	case errors.Is(err, raft.ErrNothingNewToSnapshot):
		// Nothing applied since the last snapshot (or at all): the FSM
		// holds exactly the state to back up.
		return s.persistFSM(w)
	case err != nil:
		return fmt.Errorf("snapshot: %w", mapRaftErr(err))
	}
	_, rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("open snapshot: %w", err)
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

// persistFSM writes the FSM's current state in snapshot form to w.
func (s *Store) persistFSM(w io.Writer) error {
	snap, err := s.fsm.Snapshot()
	if err != nil {
		return err
	}
	defer snap.Release()
	sink := &writerSink{w: w}
	if err := snap.Persist(sink); err != nil {
		return err
	}
	return sink.err
}

// RestoreSnapshot replaces the whole cluster's registry with a backup made
// by SaveSnapshot. Only the leader may call it; followers receive the
// restored state as a raft snapshot. The backup is checked before raft sees
// it. It is meant for disaster recovery, not routine use.
func (s *Store) RestoreSnapshot(rd io.Reader) error {
	r, err := s.running()
	if err != nil {
		return err
	}
	b, err := io.ReadAll(rd)
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	if _, err := decodeSnapshot(bytes.NewReader(b)); err != nil {
		return err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(len(b))}
	if err := r.Restore(meta, bytes.NewReader(b), operatorTimeout); err != nil {
		return fmt.Errorf("restore snapshot: %w", mapRaftErr(err))
	}
	s.logger.Warn("restored registry from snapshot", "nodes", s.fsm.Len())
	return nil
}

// Close shuts raft down (without leaving the cluster: a restarted node
// rejoins), then closes the transport if the Store made it and the log
// store. It is safe to call more than once and returns the first call's
// result.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.closeErr
	}
	s.closed = true
	if !s.opened {
		close(s.leaderCh)
		return nil
	}
	var errs []error
	if err := s.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("shutdown raft: %w", err))
	}
	close(s.stopDrain)
	<-s.drainDone
	close(s.stopForward)
	<-s.forwardDone
	if s.ownTrans != nil {
		if err := s.ownTrans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft transport: %w", err))
		}
	}
	if s.bolt != nil {
		if err := s.bolt.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log: %w", err))
		}
	}
	s.closeErr = errors.Join(errs...)
	s.logger.Info("raft stopped")
	return s.closeErr
}

// writerSink adapts an io.Writer to raft.SnapshotSink for persistFSM.
type writerSink struct {
	w   io.Writer
	err error
}

// Write, Close, ID and Cancel implement raft.SnapshotSink.
func (w *writerSink) Write(p []byte) (int, error) { return w.w.Write(p) }
func (w *writerSink) Close() error                { return nil }
func (w *writerSink) ID() string                  { return "backup" }
func (w *writerSink) Cancel() error {
	w.err = errors.New("snapshot cancelled")
	return nil
}

var _ raft.SnapshotSink = (*writerSink)(nil)

// applyPollInterval is how often WaitCommitApplied looks again when the
// entries it waits for are not registry commands (raft's no-ops, barriers
// and configuration changes never reach the FSM, so no change wakes it).
const applyPollInterval = 2 * time.Millisecond

// WaitCommitApplied waits until this node's registry has applied every
// registry command that raft had committed when it was called, and
// returns that commit index. It is the leader's half of a linearizable
// read (raft's read index, thesis §6.4): a follower can have applied a
// committed entry before the leader's FSM did, so the leader answers, or
// hands out a read index, only once its own registry has caught up with
// its commit index. raft's AppliedIndex is no proof of that: it counts
// entries handed to the FSM goroutine, not ones the FSM has applied, so
// the wait is on the FSM's own index, for the last command at or below the
// commit index (found in the log). It returns ctx's error, wrapped, when
// ctx ends first.
func (s *Store) WaitCommitApplied(ctx context.Context) (uint64, error) {
	r, err := s.running()
	if err != nil {
		return 0, err
	}
	commit := r.CommitIndex()
	for {
		applied := s.fsm.Index()
		if applied >= commit {
			return commit, nil
		}
		need, err := s.lastCommandAfter(applied, commit)
		if err != nil {
			return 0, err
		}
		if need == 0 || applied >= need {
			return commit, nil
		}
		wctx, cancel := context.WithTimeout(ctx, applyPollInterval)
		_, _ = s.fsm.WaitIndex(wctx, applied)
		cancel()
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("registry applied %d of commit index %d: %w", s.fsm.Index(), commit, err)
		}
	}
}

// lastCommandAfter returns the index of the last registry command in the
// log in (after, upto], or 0 when there is none. An entry missing from the
// log was compacted into a snapshot, which the FSM has restored or
// applied, so the search stops there.
func (s *Store) lastCommandAfter(after, upto uint64) (uint64, error) {
	var l raft.Log
	for i := upto; i > after; i-- {
		if err := s.logStore.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				return 0, nil
			}
			return 0, fmt.Errorf("read raft log entry %d: %w", i, err)
		}
		if l.Type == raft.LogCommand {
			return i, nil
		}
	}
	return 0, nil
}
