package consensus

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A follower that cannot write its log (a full disk) still answers raft's
// heartbeats, so raft's LastContact keeps advancing and the follower looks
// current while it falls further behind. The Store therefore watches two
// things raft does not report: whether its log appends succeed (healthLog
// wraps the LogStore raft writes to) and the commit index the leader
// announces in its AppendEntries requests (watchedTransport peeks at them
// on their way to raft). Health puts them together.

// failLogEvery bounds how often the "cannot persist" line is logged when
// appends keep failing and succeeding in turn: once per episode, and at
// most once per interval.
const failLogEvery = 30 * time.Second

// Health is what a node can honestly say about its own replica.
type Health struct {
	// CanPersist is false from a failed log append until an append
	// succeeds again (the leader retries the same entries at once, so it
	// recovers within a round trip once the disk has room).
	CanPersist bool
	// AppendError is the last failed append's error while !CanPersist.
	AppendError error
	// FailingSince is when appends started failing; zero while CanPersist.
	FailingSince time.Time
	// LastAppend is when a log append last succeeded; zero if none since
	// Open.
	LastAppend time.Time
	// LastContact is when this node last heard from the leader while
	// keeping up with it: raft's last contact while it can persist, and
	// FailingSince while it cannot (raft's own keeps advancing with the
	// heartbeats). Zero if never. On the leader it is raft's (the time it
	// was elected); callers report 0 there.
	LastContact time.Time
	// AppliedIndex is the raft index last applied locally.
	AppliedIndex uint64
	// CommitIndex is the highest commit index this node knows of: the
	// leader's, as its latest AppendEntries request said, or its own,
	// whichever is higher.
	CommitIndex uint64
}

// Lag is how many committed entries this node has not applied yet.
func (h Health) Lag() uint64 {
	if h.CommitIndex <= h.AppliedIndex {
		return 0
	}
	return h.CommitIndex - h.AppliedIndex
}

// persistHealth records log appends and the leader's commit index. It is
// shared by healthLog and watchedTransport.
type persistHealth struct {
	logger *slog.Logger

	// leaderCommit is the highest LeaderCommitIndex seen.
	leaderCommit atomic.Uint64

	mu sync.Mutex
	// The fields below are guarded by mu.
	lastOK       time.Time
	failErr      error
	failingSince time.Time
	failures     int       // failed appends in this episode
	loggedFail   bool      // this episode's failure was logged
	lastFailLog  time.Time // when a failure line was last logged
	suppressed   int       // episodes not logged since lastFailLog
}

// appended records the result of one append.
func (h *persistHealth) appended(err error, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.lastOK = now
		if h.failErr != nil {
			if h.loggedFail {
				h.logger.Info("raft log appends succeed again", "failed-for", now.Sub(h.failingSince).Round(time.Millisecond),
					"failed-appends", h.failures)
			}
			h.failErr, h.failingSince, h.failures, h.loggedFail = nil, time.Time{}, 0, false
		}
		return
	}
	h.failures++
	if h.failErr == nil {
		h.failingSince = now
		if h.lastFailLog.IsZero() || now.Sub(h.lastFailLog) >= failLogEvery {
			h.logger.Error("cannot persist the raft log: appends fail, this node is not ready and its reads are stale until one succeeds",
				"err", err, "episodes-not-logged", h.suppressed)
			h.loggedFail, h.lastFailLog, h.suppressed = true, now, 0
		} else {
			h.suppressed++
		}
	}
	h.failErr = err
}

func (h *persistHealth) sawLeaderCommit(idx uint64) {
	for {
		cur := h.leaderCommit.Load()
		if idx <= cur || h.leaderCommit.CompareAndSwap(cur, idx) {
			return
		}
	}
}

// healthLog is the raft.LogStore raft writes to: it passes everything on
// and records whether appends succeed.
type healthLog struct {
	raft.LogStore
	h *persistHealth
}

var _ raft.LogStore = (*healthLog)(nil)

// StoreLog implements raft.LogStore.
func (l *healthLog) StoreLog(log *raft.Log) error {
	err := l.LogStore.StoreLog(log)
	l.h.appended(err, time.Now())
	return err
}

// StoreLogs implements raft.LogStore.
func (l *healthLog) StoreLogs(logs []*raft.Log) error {
	err := l.LogStore.StoreLogs(logs)
	l.h.appended(err, time.Now())
	return err
}

// watchedTransport passes raft's transport through, noting the commit
// index of each AppendEntries request before raft sees it. Its Consumer is
// fed by forward, which the Store runs and stops. Heartbeats, which carry
// no commit index, take the wrapped transport's own path.
type watchedTransport struct {
	raft.Transport
	h    *persistHealth
	rpcs chan raft.RPC
}

var (
	_ raft.Transport   = (*watchedTransport)(nil)
	_ raft.WithPreVote = (*watchedTransport)(nil)
	_ raft.WithClose   = (*watchedTransport)(nil)
)

func newWatchedTransport(t raft.Transport, h *persistHealth) *watchedTransport {
	return &watchedTransport{Transport: t, h: h, rpcs: make(chan raft.RPC)}
}

// Consumer implements raft.Transport.
func (t *watchedTransport) Consumer() <-chan raft.RPC { return t.rpcs }

// RequestPreVote implements raft.WithPreVote; Open disables pre-vote when
// the wrapped transport lacks it, so this is only called when it has it.
func (t *watchedTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.Transport.(raft.WithPreVote).RequestPreVote(id, target, args, resp)
}

// Close implements raft.WithClose (raft closes its transport on shutdown).
func (t *watchedTransport) Close() error {
	if c, ok := t.Transport.(raft.WithClose); ok {
		return c.Close()
	}
	return nil
}

// forward moves RPCs from the wrapped transport to raft until stop closes.
func (t *watchedTransport) forward(stop <-chan struct{}) {
	in := t.Transport.Consumer()
	for {
		select {
		case rpc := <-in:
			if ae, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				t.h.sawLeaderCommit(ae.LeaderCommitIndex)
			}
			select {
			case t.rpcs <- rpc:
			case <-stop:
				return
			}
		case <-stop:
			return
		}
	}
}

// Health reports whether this node can persist its log and how far it is
// behind the commit index it knows of. It is cheap enough for every read.
func (s *Store) Health() Health {
	r, err := s.running()
	if err != nil {
		return Health{}
	}
	h := s.health
	out := Health{CanPersist: true, LastContact: r.LastContact(), AppliedIndex: r.AppliedIndex()}
	h.mu.Lock()
	out.LastAppend = h.lastOK
	if h.failErr != nil {
		out.CanPersist, out.AppendError, out.FailingSince = false, h.failErr, h.failingSince
		out.LastContact = h.failingSince
	}
	h.mu.Unlock()
	out.CommitIndex = max(h.leaderCommit.Load(), r.CommitIndex())
	return out
}
