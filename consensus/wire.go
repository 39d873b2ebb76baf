package consensus

import "strings"

// SnapshotVersion is the version of the registry snapshot format this build
// writes and the only one it restores (raft snapshots and operator
// snapshots alike). A replica refuses a snapshot of another version.
const SnapshotVersion = snapshotVersion

// MaxCommandType is the highest raft command type this build applies.
// Types are never renumbered and bodies only grow by optional fields, so a
// build applies every entry of a build with the same or a lower maximum;
// an entry of a higher type stops a replica that does not know it (Apply
// panics rather than diverge), so a new type may be written only once
// every orchestrator runs a build that knows it (docs/OPERATIONS.md).
func MaxCommandType() CommandType {
	var highest CommandType
	for t := CommandType(1); t != 0; t++ {
		if !strings.HasPrefix(t.String(), "command-type(") {
			highest = t
		}
	}
	return highest
}
