//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/memtrim"
)

// rssFileKB is a process's resident file-backed memory (RssFile: its
// executable and libraries), in kB.
func rssFileKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("RssFile %q: %v", v, err)
			}
			return kb
		}
	}
	t.Fatal("no RssFile in /proc/PID/status")
	return 0
}

// TestProcess_DesktopTrimsStartupPages: a desktop drops the executable
// pages its start-up touched once -trim-startup-pages has passed, and
// keeps gossiping (it rejoins nothing: it stays alive to its seed).
func TestProcess_DesktopTrimsStartupPages(t *testing.T) {
	serf := serfBinary(t)
	seed := newNodeSpec(t, "seed", "127.0.0.1").withMetrics(t, metricsJSON(t, 0.1, 4, 8, "none"))
	seed.args = fastTimings
	desk := newNodeSpec(t, "desk", "127.0.0.2")
	// Long enough to read the resident set first on a busy machine.
	desk.args = append([]string{"-join", seed.gossipAddr, "-trim-startup-pages", "5s"}, fastTimings...)
	s := seed.start(t)
	s.waitReady(t)
	// The desktop runs from a copy made as scripts/install.sh installs it
	// (install(1)): the link output, or a file written in one large write,
	// sits in the page cache in large folios that a fault maps whole, so
	// pages dropped from it come back in bulk (docs/PERFORMANCE.md, "Idle
	// RSS over 10 minutes").
	bin := filepath.Join(t.TempDir(), "chiffon")
	if out, err := exec.Command("install", "-m", "0755", chiffonBinary(t), bin).CombinedOutput(); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	d := startBinary(t, bin, desk.name, desk.argv(), desk.env)
	d.waitReady(t) // the trim's timer starts after "node started"
	before := rssFileKB(t, d.cmd.Process.Pid)
	if strings.Contains(d.logText(), "trimmed start-up pages") {
		t.Fatal("the desktop trimmed before its resident set was read; raise -trim-startup-pages here")
	}
	waitFor(t, 20*time.Second, "the desktop to log the trim", func() (bool, string) {
		return strings.Contains(d.logText(), "trimmed start-up pages"), "no such line yet"
	})
	after := rssFileKB(t, d.cmd.Process.Pid)
	t.Logf("desktop RssFile: %d kB before the trim, %d kB after", before, after)
	// An idle desktop uses about half of what start-up touched (8 MiB of
	// 16 measured); 2 MiB is what the target allows above serf.
	if after > before-2048 {
		t.Fatalf("desktop RssFile %d kB after the trim, %d kB before: less than 2 MiB dropped", after, before)
	}
	waitStatus(t, serf, seed, desk.name, "alive", 10*time.Second)
}

// TestTrimStartupPages_TheProcessStillCallsC: chiffon is a cgo binary
// (NVML), linked with a read-only relocated GOT whose last page also holds
// the lazy binder's entries (GOT[1], GOT[2]). Dropping that page with the
// start-up pages reverted them to the file's zeros, and the first call of
// any C function not yet bound jumped to address 0: two orchestrators of
// a 1,000-desktop simulation died with SIGSEGV minutes after the trim,
// and a -retry-join by host name resolved through the C library would
// have too. A child test process trims, then resolves a name through the
// C library (GODEBUG=netdns=cgo: getaddrinfo, unbound until then) and
// grows its heap; it must exit 0.
func TestTrimStartupPages_TheProcessStillCallsC(t *testing.T) {
	if os.Getenv("CHIFFON_TRIM_CHILD") == "1" {
		if _, err := memtrim.Executable(); err != nil {
			fmt.Println("trim:", err)
			os.Exit(3)
		}
		addrs, err := net.LookupHost("localhost")
		fmt.Println("resolved localhost:", addrs, err)
		var keep [][]byte
		for range 64 {
			keep = append(keep, make([]byte, 4<<20))
		}
		runtime.KeepAlive(keep)
		fmt.Println("grew the heap after the trim")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTrimStartupPages_TheProcessStillCallsC$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CHIFFON_TRIM_CHILD=1", "GODEBUG=netdns=cgo")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "grew the heap after the trim") {
		t.Fatalf("the trimmed process: %v\n%s", err, tail(string(out), 15))
	}
	t.Logf("%s", out)
}
