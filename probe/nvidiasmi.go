package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// nvidiaSMIArgs asks for exactly the columns ParseNvidiaSMI expects, in
// that order, without header or units.
var nvidiaSMIArgs = []string{
	"--query-gpu=index,name,memory.total,memory.free,utilization.gpu",
	"--format=csv,noheader,nounits",
}

// runNvidiaSMI runs nvidia-smi and parses its output. A missing binary is
// errUnavailable; a timeout, a non-zero exit or unparsable output are
// errors the caller logs.
func runNvidiaSMI(ctx context.Context, path string, timeout time.Duration) ([]GPU, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, path, nvidiaSMIArgs...)
	// The context kills nvidia-smi itself, but a child it left behind (or
	// a wrapper script's child) can keep the output pipe open and make
	// Wait block forever; WaitDelay caps that.
	cmd.WaitDelay = min(timeout, time.Second)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr

	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return nil, fmt.Errorf("nvidia-smi: no answer within %v", timeout)
	}
	if err != nil {
		// A bare name not on PATH gives ErrNotFound, an absolute path
		// that does not exist gives ENOENT: both mean no NVIDIA driver.
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("nvidia-smi: %w: %w", err, errUnavailable)
		}
		// nvidia-smi explains itself on stdout ("NVIDIA-SMI has failed
		// because it couldn't communicate with the NVIDIA driver"), so
		// quote whichever stream has text.
		msg := firstLine(stderr.Bytes())
		if msg == "" {
			msg = firstLine(stdout.Bytes())
		}
		if msg != "" {
			return nil, fmt.Errorf("nvidia-smi: %w: %s", err, msg)
		}
		return nil, fmt.Errorf("nvidia-smi: %w", err)
	}
	gpus, err := ParseNvidiaSMI(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("nvidia-smi: %w", err)
	}
	return gpus, nil
}

// firstLine returns the first non-blank line of b, trimmed and capped so a
// runaway message does not flood the log.
func firstLine(b []byte) string {
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" {
			if len(line) > 200 {
				line = line[:200] + "…"
			}
			return line
		}
	}
	return ""
}

// ParseNvidiaSMI parses the output of
//
//	nvidia-smi --query-gpu=index,name,memory.total,memory.free,utilization.gpu --format=csv,noheader,nounits
//
// one GPU per line, memory in MiB. Blank lines are skipped. A utilization
// of "[N/A]" or "[Not Supported]" becomes -1 (unknown); the same markers in
// a memory column become 0, so an unmeasurable card is never offered. Any
// other malformed line is an error wrapping ErrNvidiaSMIOutput that names
// the line.
func ParseNvidiaSMI(out []byte) ([]GPU, error) {
	var gpus []GPU
	n := 0
	for line := range strings.Lines(string(out)) {
		n++
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		g, err := parseSMILine(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrNvidiaSMIOutput, n, err)
		}
		gpus = append(gpus, g)
	}
	return gpus, nil
}

// parseSMILine parses one CSV line of ParseNvidiaSMI's format.
func parseSMILine(line string) (GPU, error) {
	f := strings.Split(line, ",")
	if len(f) != 5 {
		return GPU{}, fmt.Errorf("want 5 comma-separated fields, got %d", len(f))
	}
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	idx, err := strconv.Atoi(f[0])
	if err != nil || idx < 0 {
		return GPU{}, fmt.Errorf("index %q is not a non-negative integer", f[0])
	}
	if f[1] == "" {
		return GPU{}, errors.New("empty name")
	}
	totalMiB, err := parseSMINumber("memory.total", f[2], 0)
	if err != nil {
		return GPU{}, err
	}
	freeMiB, err := parseSMINumber("memory.free", f[3], 0)
	if err != nil {
		return GPU{}, err
	}
	if freeMiB > totalMiB {
		return GPU{}, fmt.Errorf("memory.free %v MiB exceeds memory.total %v MiB", freeMiB, totalMiB)
	}
	util, err := parseSMINumber("utilization.gpu", f[4], -1)
	if err != nil {
		return GPU{}, err
	}
	if util > 100 {
		return GPU{}, fmt.Errorf("utilization.gpu %v is above 100", util)
	}
	return GPU{
		Index:          idx,
		Name:           f[1],
		VRAMTotalGB:    round2(totalMiB / 1024),
		VRAMFreeGB:     round2(freeMiB / 1024),
		UtilizationPct: util,
	}, nil
}

// parseSMINumber parses a non-negative finite number, or one of
// nvidia-smi's "not available" markers, which yield unknown.
func parseSMINumber(field, s string, unknown float64) (float64, error) {
	switch strings.ToLower(strings.Trim(s, "[]")) {
	case "n/a", "not supported", "unknown error", "insufficient permissions":
		return unknown, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, fmt.Errorf("%s %q is not a non-negative number", field, s)
	}
	return v, nil
}
