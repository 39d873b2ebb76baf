//go:build linux

package memtrim

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Executable drops this process's resident pages of its own executable's
// read-only mappings and returns how many bytes of address space it
// advised (not how many pages were resident).
func Executable() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("memtrim: executable path: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("memtrim: %w", err)
	}
	defer f.Close()
	spans, err := readOnlySpans(f, exe)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, s := range spans {
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, s.start, s.end-s.start, syscall.MADV_DONTNEED); errno != 0 {
			return total, fmt.Errorf("memtrim: madvise %#x-%#x: %w", s.start, s.end, errno)
		}
		total += int64(s.end - s.start)
	}
	return total, nil
}

// span is an address range [start, end).
type span struct{ start, end uintptr }

// readOnlySpans parses /proc/self/maps lines
// ("start-end perms offset dev inode path") and returns the private,
// non-writable mappings of path.
func readOnlySpans(r io.Reader, path string) ([]span, error) {
	var out []span
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || strings.Join(fields[5:], " ") != path {
			continue
		}
		perms := fields[1]
		// r--p or r-xp only: never a writable or shared mapping.
		if len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			return nil, fmt.Errorf("memtrim: bad maps line %q", sc.Text())
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("memtrim: bad maps line %q", sc.Text())
		}
		out = append(out, span{uintptr(start), uintptr(end)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("memtrim: read maps: %w", err)
	}
	return out, nil
}
