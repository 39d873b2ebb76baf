//go:build !linux

package owner

import (
	"os"
	"time"
)

// accessTime falls back to the modification time where Chiffon does not
// read access times (it runs its desktops on Linux).
func accessTime(path string) (time.Time, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}
