package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/chiffon-dev/chiffon/consensus"
)

// HealthReporter is an optional interface of Raft: a Raft that has it
// (consensus.Store does) tells whether it can persist its log and the
// commit index it knows of, so that /readyz and the stale-read headers
// tell the truth about a follower whose disk is full. Without it the
// server trusts raft's last contact and its own commit index.
type HealthReporter interface {
	Health() consensus.Health
}

var _ HealthReporter = (*consensus.Store)(nil)

// health returns the local replica's health from Raft, through
// HealthReporter when it has it.
func (s *Server) health() consensus.Health {
	if hr, ok := s.raft.(HealthReporter); ok {
		return hr.Health()
	}
	st := s.raft.Stats()
	commit, _ := strconv.ParseUint(st["commit_index"], 10, 64)
	applied, _ := strconv.ParseUint(st["applied_index"], 10, 64)
	return consensus.Health{CanPersist: true, LastContact: s.raft.LastContact(), CommitIndex: commit, AppliedIndex: applied}
}

// CommitWaiter is an optional interface of Raft: a Raft that has it
// (consensus.Store does) can wait until its registry has applied the
// commit index, which the leader does before it answers a default or
// consistent read or hands out a read index (see Server.leaderCatchUp).
// Without it the leader answers from its registry as it is.
type CommitWaiter interface {
	// WaitCommitApplied waits until the local registry has applied every
	// registry command raft had committed when it was called, and returns
	// that commit index.
	WaitCommitApplied(ctx context.Context) (uint64, error)
}

var _ CommitWaiter = (*consensus.Store)(nil)

// leaderCatchUp waits, within Config.ReadIndexTimeout, until this leader's
// registry has applied its commit index. raft's read index (thesis §6.4):
// a follower may apply a committed entry before the leader's own FSM does,
// so a leader answering from its registry as it stands could return an
// older index than a follower already returned. It returns
// ErrApplyBehind when the wait times out.
func (s *Server) leaderCatchUp(ctx context.Context) error {
	cw, ok := s.raft.(CommitWaiter)
	if !ok {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ReadIndexTimeout)
	defer cancel()
	if _, err := cw.WaitCommitApplied(wctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w within %s: %w", ErrApplyBehind, s.cfg.ReadIndexTimeout, err)
	}
	return nil
}

// writeApplyBehind answers 503 for a leader whose registry did not catch up
// with its commit index in time (see leaderCatchUp).
func (s *Server) writeApplyBehind(w http.ResponseWriter, err error) {
	s.logger.Warn("leader read: registry behind the commit index", "err", err)
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, err.Error()+"; retry, or ask with ?stale")
}
