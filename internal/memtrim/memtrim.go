// Package memtrim drops the pages of the running executable that start-up
// touched and the process no longer uses, so that a long-running process's
// resident set is its working set and not its start-up.
//
// Why: the kernel maps a 64 KiB window of an executable around every page a
// process touches (fault-around), and a Go program's start-up (package
// initialisation, flag parsing, building the node) touches code and tables
// all over the binary. A desktop runs the one chiffon binary that also
// serves orchestrators, so 80 % of its 18 MiB of code and read-only data
// end up resident although an idle desktop runs a small part of it (see
// docs/PERFORMANCE.md, "Idle RSS over 10 minutes").
//
// Executable unmaps the executable's read-only mappings (code, read-only
// data) from this process with madvise(MADV_DONTNEED). Those mappings are
// private and hold the file's bytes, so this loses nothing: the pages stay
// in the page cache and the next use faults them back in, as at start-up.
// Writable mappings (.data, .bss, heap) are left alone, and so is a
// read-only mapping with a page of its own (anonymous, in smaps): the
// relocated GOT of a cgo binary, which the dynamic linker wrote and then
// made read-only. Dropping that brought the file's unrelocated bytes back,
// and the first call of a C function not bound yet jumped to address 0.
package memtrim

import "errors"

// ErrUnsupported is returned by Executable on systems where it does nothing
// (anything but Linux).
var ErrUnsupported = errors.New("memtrim: not supported on this system")
