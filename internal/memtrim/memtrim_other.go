//go:build !linux

package memtrim

// Executable does nothing here and returns ErrUnsupported.
func Executable() (int64, error) { return 0, ErrUnsupported }
