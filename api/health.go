package api

import (
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
