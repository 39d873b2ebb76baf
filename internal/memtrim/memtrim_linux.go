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
// read-only mappings that still hold the file's bytes and returns how many
// bytes of address space it advised (not how many pages were resident).
func Executable() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("memtrim: executable path: %w", err)
	}
	f, err := os.Open("/proc/self/smaps")
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

// readOnlySpans reads smaps (the format of /proc/PID/smaps) and returns
// the private read-only mappings of path whose pages are all the file's:
// no anonymous (copy-on-write) page resident or swapped. A cgo binary's
// relocated GOT is such a mapping with anonymous pages: the dynamic
// linker wrote the addresses of the C functions into it and then made it
// read-only (RELRO); dropping it would bring the file's unrelocated bytes
// back, and the next call into C would jump to address 0.
func readOnlySpans(r io.Reader, path string) ([]span, error) {
	var out []span
	var cur *span     // the mapping being read, if it is a candidate
	var diverged bool // cur has an anonymous page
	flush := func() {
		if cur != nil && !diverged {
			out = append(out, *cur)
		}
		cur, diverged = nil, false
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if key, ok := strings.CutSuffix(fields[0], ":"); ok && !strings.Contains(key, "-") {
			// "Anonymous:   4 kB", "Swap:  0 kB", ... of the mapping above.
			if cur != nil && (key == "Anonymous" || key == "Swap") && len(fields) >= 2 && fields[1] != "0" {
				diverged = true
			}
			continue
		}
		flush() // a new mapping's header line
		if len(fields) < 6 || strings.Join(fields[5:], " ") != path {
			continue
		}
		perms := fields[1]
		if len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			return nil, fmt.Errorf("memtrim: bad smaps line %q", line)
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("memtrim: bad smaps line %q", line)
		}
		cur = &span{uintptr(start), uintptr(end)}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("memtrim: read smaps: %w", err)
	}
	flush()
	return out, nil
}
