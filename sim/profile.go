package sim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/pprof/profile"
)

// labelled runs fn with the pprof label node=name: every goroutine fn
// starts, and every goroutine those start, carries it, so a CPU profile
// can tell one in-process node's CPU from the rest.
func labelled(name string, fn func()) {
	pprof.Do(context.Background(), pprof.Labels("node", name), func(context.Context) { fn() })
}

// cpuProfile is a CPU profile of the measured part, kept in memory.
type cpuProfile struct {
	buf bytes.Buffer
	ok  bool
	raw []byte // the profile as pprof wrote it, once stopped
}

// save writes the stopped profile to path (nothing when path is "").
func (p *cpuProfile) save(path string) error {
	if path == "" {
		return nil
	}
	if p.raw == nil {
		return fmt.Errorf("cpu profile: none was taken (is another CPU profile running?)")
	}
	return os.WriteFile(path, p.raw, 0o644)
}

// saveHeap writes a heap profile of the process to path (nothing when
// path is "").
func saveHeap(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startProfile starts profiling; it fails (and the leader's CPU is not
// reported) when something else is profiling, such as go test
// -cpuprofile.
func startProfile() *cpuProfile {
	p := &cpuProfile{}
	p.ok = pprof.StartCPUProfile(&p.buf) == nil
	return p
}

// stop ends the profile and sums its CPU time by node label; ok is false
// when there was no profile.
func (p *cpuProfile) stop() (byNode map[string]time.Duration, ok bool) {
	if !p.ok {
		return nil, false
	}
	pprof.StopCPUProfile()
	p.ok = false
	p.raw = slices.Clone(p.buf.Bytes())
	prof, err := profile.Parse(&p.buf)
	if err != nil {
		return nil, false
	}
	// The CPU sample type's second value is nanoseconds.
	vi := len(prof.SampleType) - 1
	byNode = map[string]time.Duration{}
	for _, s := range prof.Sample {
		if names := s.Label["node"]; len(names) > 0 {
			byNode[names[0]] += time.Duration(s.Value[vi])
		}
	}
	return byNode, true
}

// processCPU is the CPU time (user and system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss reads a process's resident and peak resident memory (MiB) from
// /proc/PID/status (pid "self": this process); -1 where it cannot.
func rss(pid string) (now, peak float64) {
	now, peak = -1, -1
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return now, peak
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			now = kb / 1024
		case "VmHWM":
			peak = kb / 1024
		}
	}
	return now, peak
}

// goHeapMiB is the Go heap in use.
func goHeapMiB() float64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapInuse) / (1 << 20)
}
