package owner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"
)

// FileSource reads the owner's last input from the access times of device
// nodes: the newest access time of any node matching its patterns is the
// last input. Build one with NewInputSource or NewTTYSource.
type FileSource struct {
	name     string
	root     string
	patterns []string // filepath.Match patterns, relative to root
	now      func() time.Time
}

var _ Source = (*FileSource)(nil)

// NewInputSource reads the access times of root/dev/input/event*: the
// kernel's input devices, read by the display server or libinput as keys
// and the mouse move. root is "/" on a real machine and a temporary
// directory in tests; now nil means time.Now.
func NewInputSource(root string, now func() time.Time) *FileSource {
	return &FileSource{name: "input", root: root, patterns: []string{"dev/input/event*"}, now: now}
}

// NewTTYSource reads the access times of the virtual consoles
// (root/dev/tty[0-9]*) and pseudo-terminals (root/dev/pts/[0-9]*): the tty
// layer sets a terminal's access time when it is read, that is when
// someone types on it, as `w` shows in its IDLE column. root and now are as
// for NewInputSource.
func NewTTYSource(root string, now func() time.Time) *FileSource {
	return &FileSource{name: "tty", root: root, patterns: []string{"dev/tty[0-9]*", "dev/pts/[0-9]*"}, now: now}
}

// Name is "input" or "tty".
func (f *FileSource) Name() string { return f.name }

// Read stats every matching node and reports the newest access time.
// Nodes that vanish or cannot be stat'ed are skipped; when no node is left
// it returns ErrNoData (joined with the stat errors, if any).
func (f *FileSource) Read(ctx context.Context) (Reading, error) {
	var (
		newest time.Time
		found  int
		errs   []error
	)
	for _, pat := range f.patterns {
		matches, err := filepath.Glob(filepath.Join(f.root, pat))
		if err != nil { // only for a malformed pattern: ours are constants
			return Reading{}, fmt.Errorf("%s: glob %q: %w", f.name, pat, err)
		}
		for _, m := range matches {
			if err := ctx.Err(); err != nil {
				return Reading{}, fmt.Errorf("%s: %w", f.name, err)
			}
			at, err := accessTime(m)
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) { // a terminal closed since the glob
					errs = append(errs, err)
				}
				continue
			}
			found++
			if at.After(newest) {
				newest = at
			}
		}
	}
	if found == 0 {
		return Reading{}, errors.Join(append([]error{fmt.Errorf("%w: no %s nodes under %s", ErrNoData, f.name, f.root)}, errs...)...)
	}
	return Reading{Source: f.name, Idle: idleSince(nowOf(f.now), newest), LastInput: newest}, nil
}
