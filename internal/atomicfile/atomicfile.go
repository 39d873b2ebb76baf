// Package atomicfile writes small files that must never be seen half
// written (a node's identity, a secret token): the data goes to a
// temporary file beside the target, which is synced and then renamed over
// it, so a crash or a concurrent reader sees the old file or the new one,
// never a part. It imports only the standard library.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, with mode perm (applied before the
// rename, so the file is never readable more widely than perm). The
// directory must exist.
func Write(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*") // created 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	return err
}
