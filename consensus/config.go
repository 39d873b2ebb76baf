package consensus

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// Config configures a Store. Fill one from DefaultConfig; New takes
// ownership of it.
type Config struct {
	// NodeID is this server's raft ID. It must be stable for the life of
	// the data directory; LoadOrCreateNodeID provides one.
	NodeID string

	// DataDir holds the raft log and stable store (<DataDir>/raft/raft.db)
	// and snapshots (<DataDir>/snapshots). Required unless InMemory.
	DataDir string

	// BindAddr is the host:port the raft TCP transport listens on. Port 0
	// picks a free port (see Store.Addr). Unused when Transport is set.
	BindAddr string

	// AdvertiseAddr is the host:port other servers reach this one at.
	// Required when BindAddr's host is unspecified (0.0.0.0 or ::).
	AdvertiseAddr string

	// TLS, when non-nil, carries raft over mutual TLS with the cluster CA
	// (TLS.Roots must be set): the listener refuses, in the handshake, a
	// peer without a CA-signed server certificate of TLS.Domain (a
	// desktop's client certificate among them, with a log line), and dials
	// require the same of the peer. Nil keeps plain TCP. Unused when
	// Transport is set.
	TLS *tlsutil.Bundle

	// Transport, when non-nil, is used instead of a TCP transport (e.g. a
	// raft.InmemTransport in tests). The Store does not close it.
	Transport raft.Transport

	// InMemory keeps the log, stable store and snapshots in memory: nothing
	// survives Close. For tests.
	InMemory bool

	// HeartbeatTimeout is how long a follower waits without hearing from the
	// leader before it stands for election (raft randomises it between 1x
	// and 2x).
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits for votes (again 1x–2x)
	// before starting a new election. At least HeartbeatTimeout.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without reaching
	// a quorum. At most HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is the longest the leader waits before sending a
	// heartbeat that carries the commit index.
	CommitTimeout time.Duration

	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one.
	SnapshotThreshold uint64
	// SnapshotInterval is how often raft checks whether to snapshot.
	SnapshotInterval time.Duration
	// TrailingLogs is how many log entries stay behind a snapshot, so that a
	// slightly lagging follower catches up from the log rather than a
	// snapshot.
	TrailingLogs uint64
	// SnapshotRetain is how many file snapshots to keep.
	SnapshotRetain int

	// TransportTimeout bounds TCP transport I/O.
	TransportTimeout time.Duration

	// PreVoteDisabled turns off raft's pre-vote round (on by default): a
	// node that has lost touch with the leader first asks whether it could
	// win before it raises the term, so a node starved of CPU or cut off
	// for a moment does not depose a healthy leader when it returns.
	PreVoteDisabled bool

	// WrapLogStore, when set, wraps the log store raft appends to (BoltDB,
	// or the in-memory store). For fault-injection tests.
	WrapLogStore func(raft.LogStore) raft.LogStore

	// Logger receives the Store's and raft's logs. Nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns settings for orchestrators on a LAN. Its timings let
// the survivors elect a new leader within 2 s of the leader dying, where
// raft's own defaults (1 s heartbeat, 1 s election) take up to 4 s: a
// follower stands for election 0.5–1 s after it last heard from the leader
// (HeartbeatTimeout, randomised 1x–2x), and a round of (pre-)votes takes a
// few round trips. TestCluster_FailoverDefaultTimings measures it on the
// in-memory transport: 0.6–1.4 s over 30 trials under -race.
//
// The lease equals the heartbeat timeout, the most raft allows: a leader
// steps down when it has not heard from a quorum within the lease, and
// with 250 ms a leader whose goroutines waited that long for a CPU (four
// busy loops on two cores) stepped down 5–6 times a minute; with 500 ms,
// 0–1 times (docs/PERFORMANCE.md, scripts/elections.sh). Failover after a
// crash does not depend on the lease; an isolated leader stops answering
// as leader 500 ms after it last reached a quorum instead of 250 ms, still
// before the others can elect a successor (at least one heartbeat timeout).
//
// NodeID and DataDir have no default. BindAddr listens on every interface,
// so AdvertiseAddr must be set, or BindAddr narrowed to one address.
func DefaultConfig() Config {
	return Config{
		BindAddr:           "0.0.0.0:8300",
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   2 * time.Minute,
		TrailingLogs:       10240,
		SnapshotRetain:     2,
		TransportTimeout:   10 * time.Second,
	}
}

// validate checks c and returns an error wrapping ErrInvalidConfig.
func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if c.NodeID == "" {
		return bad("NodeID is empty")
	}
	if !c.InMemory && c.DataDir == "" {
		return bad("DataDir is empty")
	}
	if c.Transport == nil {
		host, _, err := net.SplitHostPort(c.BindAddr)
		if err != nil {
			return bad("BindAddr %q: %v", c.BindAddr, err)
		}
		if c.AdvertiseAddr == "" {
			if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
				return bad("AdvertiseAddr is needed when BindAddr %q is a wildcard address", c.BindAddr)
			}
		} else if _, err := net.ResolveTCPAddr("tcp", c.AdvertiseAddr); err != nil {
			return bad("AdvertiseAddr %q: %v", c.AdvertiseAddr, err)
		}
		if c.TLS != nil && c.TLS.Roots == nil {
			return bad("raft over TLS needs the cluster CA (-tls-ca)")
		}
		if c.TransportTimeout <= 0 {
			return bad("TransportTimeout must be positive")
		}
	}
	if c.SnapshotRetain < 1 {
		return bad("SnapshotRetain must be at least 1")
	}
	// raft checks the timings again; checking here gives the error at New
	// rather than at Open.
	rc := c.raftConfig()
	if err := raft.ValidateConfig(rc); err != nil {
		return bad("%v", err)
	}
	return nil
}

// raftConfig returns the raft configuration for c, without the logger and
// notify channel that Open adds.
func (c *Config) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	rc.PreVoteDisabled = c.PreVoteDisabled
	return rc
}
