package consensus

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"

	"github.com/chiffon-dev/chiffon/internal/atomicfile"
)

// NodeIDFile is the name of the file, in the data directory, that holds the
// node's persistent ID.
const NodeIDFile = "node-id"

// LoadOrCreateNodeID returns the node ID saved in <dataDir>/node-id,
// creating the directory and a new random UUID (file mode 0600) the first
// time. The ID is the node's identity for raft and the registry, so it must
// survive restarts and address changes. A file that does not hold a UUID is
// an error wrapping ErrBadNodeID, never silently replaced.
func LoadOrCreateNodeID(dataDir string) (string, error) {
	if dataDir == "" {
		return "", fmt.Errorf("node id: %w: empty data dir", ErrInvalidConfig)
	}
	path := filepath.Join(dataDir, NodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(b))
		if _, perr := uuid.Parse(id); perr != nil {
			return "", fmt.Errorf("read %s: %w: %v", path, ErrBadNodeID, perr)
		}
		return id, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read node id: %w", err)
	}

	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	id := uuid.NewString()
	// Write a temporary file and rename it so that a crash never leaves a
	// half-written ID behind.
	if err := atomicfile.Write(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	return id, nil
}
