package gossip

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/chiffon-dev/chiffon/internal/atomicfile"
)

// RPCAuthFile is where, under a data dir, a node keeps the token that serf
// RPC clients must present (`serf -rpc-auth`, `chiffon members`) when
// -rpc-auth is not given. It sits beside serf's keyring, which that RPC can
// read: the token guards the keyring, so it gets the same directory and the
// same 0600.
const RPCAuthFile = "serf/rpc-auth"

var (
	// ErrRPCAuthPerm means the RPC auth file can be read or written by
	// users other than its owner. Like ssh with a private key, the node
	// refuses it rather than fixing the mode: another user may already
	// have read it, which only a new token undoes.
	ErrRPCAuthPerm = errors.New("serf RPC auth file is accessible by other users")
	// ErrRPCAuthEmpty means the RPC auth file holds no token.
	ErrRPCAuthEmpty = errors.New("serf RPC auth file is empty")
)

// RPCAuthPath is the RPC auth file of dataDir.
func RPCAuthPath(dataDir string) string {
	return filepath.Join(dataDir, filepath.FromSlash(RPCAuthFile))
}

// ReadRPCAuthKey reads the RPC auth token kept in dataDir. It returns an
// error wrapping fs.ErrNotExist when there is none, ErrRPCAuthPerm when the
// file is open to other users, and ErrRPCAuthEmpty when it is blank.
func ReadRPCAuthKey(dataDir string) (string, error) {
	path := RPCAuthPath(dataDir)
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read serf RPC auth: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read serf RPC auth: %w", err)
	}
	// Windows has no Unix modes to check; its ACLs are left to the user.
	if mode := st.Mode().Perm(); runtime.GOOS != "windows" && mode&0o077 != 0 {
		return "", fmt.Errorf("%s: %w (mode %#o); run `chmod 600 %s`, or delete it and restart the node for a new token",
			path, ErrRPCAuthPerm, mode, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("read serf RPC auth: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", fmt.Errorf("%s: %w", path, ErrRPCAuthEmpty)
	}
	return key, nil
}

// LoadOrCreateRPCAuthKey returns the RPC auth token kept in dataDir,
// creating it on first use: 32 random bytes, hex-encoded so that it pastes
// into a shell unquoted, written to a temporary file with mode 0600 and
// renamed into place (the directory is created 0700), so that no reader
// ever sees a partial token. created reports whether it was made now.
func LoadOrCreateRPCAuthKey(dataDir string) (key string, created bool, err error) {
	if dataDir == "" {
		return "", false, errors.New("serf RPC auth: empty data dir")
	}
	key, err = ReadRPCAuthKey(dataDir)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	path := RPCAuthPath(dataDir)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, fmt.Errorf("create serf dir: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", false, fmt.Errorf("generate serf RPC auth: %w", err)
	}
	key = hex.EncodeToString(raw)
	if err := atomicfile.Write(path, []byte(key+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("write serf RPC auth: %w", err)
	}
	return key, true, nil
}
