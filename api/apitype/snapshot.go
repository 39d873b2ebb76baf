package apitype

// PathSnapshot is the operator snapshot endpoint: GET saves the registry
// (raft's snapshot of it, opaque to clients), PUT restores one. Only the
// raft leader answers; a follower redirects there (307) with Location set
// to the same path on the leader, and answers 503 while no leader is known.
// GET ?stale answers from the contacted node's own replica instead (a
// backup when there is no quorum).
const PathSnapshot = "/v1/operator/snapshot"

// SnapshotRestored is the answer to PUT /v1/operator/snapshot: what the
// registry holds after the restore.
type SnapshotRestored struct {
	// Nodes and Work count the records and work items restored.
	Nodes int `json:"nodes"`
	Work  int `json:"work"`
	// Index is the registry index recorded in the snapshot.
	Index uint64 `json:"index"`
}
