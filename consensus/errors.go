package consensus

import (
	"errors"

	"github.com/hashicorp/raft"
)

// Sentinel errors. Errors returned by this package wrap one of these (or a
// raft sentinel) with %w, so callers match them with errors.Is.
var (
	// ErrNotLeader is returned by write operations on a node that is not the
	// raft leader. It wraps raft.ErrNotLeader, so errors.Is matches either.
	ErrNotLeader error = &wrapped{msg: "not the raft leader", err: raft.ErrNotLeader}

	// ErrTimeout is returned when raft did not accept an operation within its
	// timeout. It wraps raft.ErrEnqueueTimeout.
	ErrTimeout error = &wrapped{msg: "raft operation timed out", err: raft.ErrEnqueueTimeout}

	// ErrClosed is returned by operations on a Store that has been closed. It
	// wraps raft.ErrRaftShutdown.
	ErrClosed error = &wrapped{msg: "store closed", err: raft.ErrRaftShutdown}

	// ErrNotOpen is returned by operations on a Store before Open succeeded.
	ErrNotOpen = errors.New("store not open")

	// ErrAlreadyOpen is returned by a second call to Store.Open.
	ErrAlreadyOpen = errors.New("store already open")

	// ErrAlreadyBootstrapped is returned by Store.Bootstrap when the node
	// already has raft state (a log, a term or a snapshot). It wraps
	// raft.ErrCantBootstrap.
	ErrAlreadyBootstrapped error = &wrapped{msg: "raft state already exists", err: raft.ErrCantBootstrap}

	// ErrInvalidConfig is returned by New for an unusable Config.
	ErrInvalidConfig = errors.New("invalid consensus config")

	// ErrBadCommand is returned for a command that cannot be encoded or
	// decoded: a truncated envelope, an unknown type, malformed JSON or a
	// body that breaks the command's rules.
	ErrBadCommand = errors.New("bad command")

	// ErrBadSnapshot is returned when a registry snapshot cannot be decoded.
	ErrBadSnapshot = errors.New("bad registry snapshot")

	// ErrBadNodeID is returned by LoadOrCreateNodeID when the node-id file
	// exists but does not hold a UUID.
	ErrBadNodeID = errors.New("bad node id file")
)

// wrapped is a sentinel with its own message that still matches the raft
// error it stands for.
type wrapped struct {
	msg string
	err error
}

// Error returns the sentinel's own message.
func (e *wrapped) Error() string { return e.msg }

// Unwrap returns the raft error the sentinel stands for.
func (e *wrapped) Unwrap() error { return e.err }

// mapRaftErr translates raft's sentinels into ours; other errors pass through
// unchanged (raft's own sentinels still match them).
func mapRaftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrTimeout
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrCantBootstrap):
		return ErrAlreadyBootstrapped
	}
	return err
}
