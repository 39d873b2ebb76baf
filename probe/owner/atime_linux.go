package owner

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// accessTime is path's last access time. Stat needs only search permission
// on the directories above path, not read permission on the node itself.
func accessTime(path string) (time.Time, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return time.Time{}, fmt.Errorf("stat %s: no access time", path)
	}
	return time.Unix(st.Atim.Sec, st.Atim.Nsec), nil
}
