// Command gpucheck checks the probe's GPU sources against a real NVIDIA GPU:
// it samples through NVML alone and through nvidia-smi alone, compares the
// two card by card, optionally starts a command that takes VRAM and checks
// that both sources see it taken and then given back, and times one sample
// of each source. It prints one line per check, "gpucheck <check> pass|FAIL
// <figures>", and a last line "gpucheck pass" or "gpucheck FAIL"; it exits
// 1 on any failure.
//
// It needs a machine with an NVIDIA driver (libnvidia-ml and nvidia-smi),
// so it is not part of the test suite; scripts/gpu-check.sh runs it (see
// docs/PERFORMANCE.md for a recorded run).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/chiffon-dev/chiffon/probe"
)

func main() {
	holdCmd := flag.String("hold-cmd", "", "shell command that takes VRAM, prints a line with 'ready' once it holds it, and keeps it until stdin closes")
	holdGB := flag.Float64("hold-gb", 0, "how much VRAM -hold-cmd takes, in GB (2^30 bytes)")
	tolGB := flag.Float64("tolerance-gb", 0.5, "allowed difference in free VRAM between two readings")
	timings := flag.Int("timing-samples", 20, "samples per source for the timing figures")
	flag.Parse()
	c := &checker{tol: *tolGB}
	c.run(*holdCmd, *holdGB, *timings)
	if c.failed {
		fmt.Println("gpucheck FAIL")
		os.Exit(1)
	}
	fmt.Println("gpucheck pass")
}

type checker struct {
	tol    float64
	failed bool
	nvml   *probe.Prober
	smi    *probe.Prober
	all    *probe.Prober
}

func (c *checker) verdict(check string, ok bool, format string, a ...any) {
	v := "pass"
	if !ok {
		v = "FAIL"
		c.failed = true
	}
	fmt.Printf("gpucheck %s %s %s\n", check, v, fmt.Sprintf(format, a...))
}

func newProber(nvml, smi bool) *probe.Prober {
	pc := probe.DefaultConfig()
	pc.DisableNVML, pc.DisableNvidiaSMI, pc.DisableSysfs = !nvml, !smi, true
	pc.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p, err := probe.New(pc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpucheck:", err)
		os.Exit(2)
	}
	return p
}

func sample(p *probe.Prober) probe.Sample {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := p.Sample(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpucheck: sample:", err)
	}
	return s
}

func (c *checker) run(holdCmd string, holdGB float64, timings int) {
	c.nvml, c.smi, c.all = newProber(true, false), newProber(false, true), newProber(true, true)
	defer c.nvml.Close()
	defer c.smi.Close()
	defer c.all.Close()

	a, b, d := sample(c.nvml), sample(c.smi), sample(c.all)
	for name, s := range map[string]probe.Sample{"nvml": a, "nvidia-smi": b, "default": d} {
		js, _ := json.Marshal(s.GPUs)
		fmt.Printf("gpucheck sample source=%s gpu_type=%s total_gb=%.2f free_gb=%.2f gpus=%s\n",
			name, s.GPUType, s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB, js)
	}
	c.verdict("nvml-finds-gpus", a.GPUType == probe.GPUTypeNVIDIA && len(a.GPUs) > 0,
		"gpu_type=%s gpus=%d", a.GPUType, len(a.GPUs))
	c.verdict("smi-finds-gpus", b.GPUType == probe.GPUTypeNVIDIA && len(b.GPUs) > 0,
		"gpu_type=%s gpus=%d", b.GPUType, len(b.GPUs))
	c.verdict("default-matches-nvml", len(d.GPUs) == len(a.GPUs) && d.GPUType == a.GPUType,
		"default gpus=%d nvml gpus=%d", len(d.GPUs), len(a.GPUs))
	c.compare("nvml-vs-smi", a, b)

	if holdCmd != "" {
		c.hold(holdCmd, holdGB, a)
	}
	c.time("nvml", c.nvml, timings)
	c.time("nvidia-smi", c.smi, timings)
}

// compare checks two samples card by card: same count, names, totals within
// 1 %, free within the tolerance, and the aggregates equal to the sums.
func (c *checker) compare(check string, a, b probe.Sample) {
	ok := len(a.GPUs) == len(b.GPUs)
	var worstTotal, worstFree float64
	for i := range min(len(a.GPUs), len(b.GPUs)) {
		x, y := a.GPUs[i], b.GPUs[i]
		ok = ok && x.Index == y.Index && x.Name == y.Name
		worstTotal = max(worstTotal, math.Abs(x.VRAMTotalGB-y.VRAMTotalGB))
		worstFree = max(worstFree, math.Abs(x.VRAMFreeGB-y.VRAMFreeGB))
		ok = ok && math.Abs(x.VRAMTotalGB-y.VRAMTotalGB) <= 0.01*max(x.VRAMTotalGB, 1) && math.Abs(x.VRAMFreeGB-y.VRAMFreeGB) <= c.tol
	}
	for _, s := range []probe.Sample{a, b} {
		var total, free float64
		for _, g := range s.GPUs {
			total += g.VRAMTotalGB
			free += g.VRAMFreeGB
		}
		ok = ok && math.Abs(total-s.GPUVRAMTotalGB) < 1e-6 && math.Abs(free-s.GPUVRAMAvailableGB) < 1e-6
	}
	c.verdict(check, ok, "gpus=%d/%d max_total_diff_gb=%.3f max_free_diff_gb=%.3f", len(a.GPUs), len(b.GPUs), worstTotal, worstFree)
}

// hold starts cmd, waits for it to say ready, checks both sources see
// holdGB less free VRAM on some card, then ends it and waits (up to 30 s)
// for the VRAM to come back.
func (c *checker) hold(cmdline string, holdGB float64, before probe.Sample) {
	cmd := exec.Command("sh", "-c", cmdline)
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		c.verdict("hold-start", false, "err=%v", err)
		return
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "ready") {
				ready <- true
				_, _ = io.Copy(io.Discard, out)
				return
			}
		}
		ready <- false
	}()
	var ok bool
	select {
	case ok = <-ready:
	case <-time.After(120 * time.Second):
	}
	if !ok {
		c.verdict("hold-start", false, "the hold command never said ready")
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return
	}
	drop := func(s probe.Sample) float64 { return before.GPUVRAMAvailableGB - s.GPUVRAMAvailableGB }
	a, b := sample(c.nvml), sample(c.smi)
	c.verdict("hold-seen-by-nvml", drop(a) >= holdGB-c.tol, "held_gb=%.2f free_drop_gb=%.2f max_free_one_gpu_gb=%.2f", holdGB, drop(a), maxFree(a))
	c.verdict("hold-seen-by-smi", drop(b) >= holdGB-c.tol, "held_gb=%.2f free_drop_gb=%.2f", holdGB, drop(b))
	c.compare("nvml-vs-smi-while-held", a, b)

	_ = stdin.Close()
	_ = cmd.Wait()
	deadline := time.Now().Add(30 * time.Second)
	var back probe.Sample
	for {
		back = sample(c.nvml)
		if drop(back) < c.tol || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.verdict("hold-released", drop(back) < c.tol, "free_drop_gb_after=%.2f", drop(back))
}

func maxFree(s probe.Sample) float64 {
	var m float64
	for _, g := range s.GPUs {
		m = max(m, g.VRAMFreeGB)
	}
	return m
}

// time reports the wall time of one sample through a source (median and
// worst of n), the cost a heartbeat pays.
func (c *checker) time(name string, p *probe.Prober, n int) {
	if n <= 0 {
		return
	}
	d := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		sample(p)
		d = append(d, time.Since(t))
	}
	slices.Sort(d)
	c.verdict("timing-"+name, true, "samples=%d median_ms=%.2f max_ms=%.2f", n,
		float64(d[n/2].Microseconds())/1000, float64(d[n-1].Microseconds())/1000)
}
