package probe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/chiffon-dev/chiffon/internal/fleet"
)

// maxMetricsFileSize caps what a metrics file may hold; a real one is well
// under a kilobyte, and a mistaken path to a disk image should not be read
// into memory every heartbeat.
const maxMetricsFileSize = 1 << 20

// sampleFileLocked reads the metrics file. On failure it returns the last
// good sample (with the TakenAt of when it was good, so staleness shows)
// and an error wrapping ErrMetricsFile. p.mu must be held.
func (p *Prober) sampleFileLocked() (Sample, error) {
	s, err := readMetricsFile(p.cfg.MetricsFile)
	p.reportLocked(srcFile, err)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrMetricsFile, err)
		if p.hasLastGood {
			return cloneSample(p.lastGood), err
		}
		return Sample{GPUType: GPUTypeNone, Source: SourceMetricsFile}, err
	}
	s.Source = SourceMetricsFile
	s.TakenAt = time.Now()
	p.lastGood, p.hasLastGood = cloneSample(s), true
	return s, nil
}

// cloneSample copies s so that a caller editing the returned GPUs cannot
// change the Prober's last good sample.
func cloneSample(s Sample) Sample {
	s.GPUs = slices.Clone(s.GPUs)
	return s
}

// readMetricsFile reads and decodes path.
func readMetricsFile(path string) (Sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return Sample{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxMetricsFileSize+1))
	if err != nil {
		return Sample{}, err
	}
	if len(data) > maxMetricsFileSize {
		return Sample{}, fmt.Errorf("%s: larger than %d bytes", path, maxMetricsFileSize)
	}
	s, err := decodeMetrics(data)
	if err != nil {
		return Sample{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// decodeMetrics decodes a metrics file, fills in what may be left out and
// validates the result:
//   - gpus without totals: the totals are the sums over gpus;
//   - totals without gpus: kept as they are (MaxFreeVRAMGB copes);
//   - cpu_cores_available absent or 0: AvailableCores(physical, load1);
//   - gpu_type absent: "none" when there is no GPU and no VRAM, an error
//     otherwise, since the vendor cannot be guessed.
//
// Unknown fields are rejected so that a typo such as "gpu_vram_total"
// fails loudly instead of reporting zero VRAM.
func decodeMetrics(data []byte) (Sample, error) {
	var s Sample
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Sample{}, fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Sample{}, errors.New("decode: trailing data after the JSON object")
	}

	if len(s.GPUs) > 0 && s.GPUVRAMTotalGB == 0 && s.GPUVRAMAvailableGB == 0 {
		s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB = sumVRAM(s.GPUs)
	}
	if s.CPUCoresAvailable == 0 {
		s.CPUCoresAvailable = round2(AvailableCores(s.CPUCoresPhysical, s.CPULoad1))
	}
	if s.GPUType == "" {
		if len(s.GPUs) > 0 || s.GPUVRAMTotalGB > 0 {
			return Sample{}, fmt.Errorf("%w: gpu_type is required when gpus or gpu_vram_total_gb are given; allowed: %s",
				ErrInvalidSample, strings.Join(vendorTypes(), ", "))
		}
		s.GPUType = GPUTypeNone
	}
	if err := Validate(s); err != nil {
		return Sample{}, err
	}
	return s, nil
}

// vramSlack absorbs float rounding when comparing sums of two-decimal GB.
const vramSlack = 1e-9

// Upper bounds on what a sample may claim. They are far above any machine
// that exists (a 1 PiB desktop, 4096 cores, 64 GPUs of 4 TiB each), and
// exist so that a typo such as 1e300 is refused where it is made, with the
// field named, rather than producing gossip tags that no longer fit serf's
// 512 bytes ("updating tags failed") at every heartbeat.
const (
	MaxCPUCores       = 4096
	MaxCPULoad        = 1e6
	MaxMemoryGB       = 1 << 20
	MaxGPUs           = 64
	MaxVRAMPerGPUGB   = 4096
	MaxGPUNameBytes   = 256
	maxTotalVRAMGB    = MaxGPUs * MaxVRAMPerGPUGB
	maxSampleGPUIndex = 1 << 16
)

// Validate reports every rule s breaks, in one error wrapping
// ErrInvalidSample: numbers must be finite, non-negative and within the
// Max* bounds, memory_percent at most 100, GPU indexes distinct, gpu_type one of GPUTypes, available VRAM at
// most total VRAM (overall and per GPU), utilization -1 or 0..100, and
// gpu_type "none" only with no GPU and no VRAM. Fields are named by their
// JSON tags, as an operator writing a metrics file sees them.
func Validate(s Sample) error {
	var bad []string
	// within checks that v is a finite number from 0 to limit.
	within := func(field string, v, limit float64) {
		switch {
		case math.IsNaN(v) || math.IsInf(v, 0):
			bad = append(bad, fmt.Sprintf("%s is %v, must be a finite number", field, v))
		case v < 0:
			bad = append(bad, fmt.Sprintf("%s is %v, must be >= 0", field, v))
		case v > limit:
			bad = append(bad, fmt.Sprintf("%s is %v, must be at most %v", field, v, limit))
		}
	}
	within("cpu_load_1min", s.CPULoad1, MaxCPULoad)
	within("cpu_load_5min", s.CPULoad5, MaxCPULoad)
	within("cpu_load_15min", s.CPULoad15, MaxCPULoad)
	within("cpu_cores_physical", float64(s.CPUCoresPhysical), MaxCPUCores)
	within("cpu_cores_available", s.CPUCoresAvailable, MaxCPUCores)
	if s.MemoryPercent > 100 {
		bad = append(bad, fmt.Sprintf("memory_percent is %v, must be between 0 and 100", s.MemoryPercent))
	} else {
		within("memory_percent", s.MemoryPercent, 100)
	}
	within("memory_available_gb", s.MemoryAvailableGB, MaxMemoryGB)
	within("gpu_vram_total_gb", s.GPUVRAMTotalGB, maxTotalVRAMGB)
	within("gpu_vram_available_gb", s.GPUVRAMAvailableGB, maxTotalVRAMGB)
	if s.GPUVRAMAvailableGB > s.GPUVRAMTotalGB+vramSlack {
		bad = append(bad, fmt.Sprintf("gpu_vram_available_gb is %v, must not exceed gpu_vram_total_gb %v",
			s.GPUVRAMAvailableGB, s.GPUVRAMTotalGB))
	}
	if !slices.Contains(GPUTypes, s.GPUType) {
		bad = append(bad, fmt.Sprintf("gpu_type is %q, must be one of %s", s.GPUType, strings.Join(GPUTypes, ", ")))
	} else if s.GPUType == GPUTypeNone && (len(s.GPUs) > 0 || s.GPUVRAMTotalGB > 0) {
		bad = append(bad, "gpu_type is \"none\" but gpus or gpu_vram_total_gb are given; name the vendor")
	}
	if len(s.GPUs) > MaxGPUs {
		bad = append(bad, fmt.Sprintf("gpus has %d entries, at most %d are allowed", len(s.GPUs), MaxGPUs))
	}
	seen := make(map[int]int, len(s.GPUs))
	for i, g := range s.GPUs {
		p := fmt.Sprintf("gpus[%d].", i)
		within(p+"index", float64(g.Index), maxSampleGPUIndex)
		if j, dup := seen[g.Index]; dup {
			bad = append(bad, fmt.Sprintf("%sindex is %d, the same as gpus[%d].index; each GPU needs its own index", p, g.Index, j))
		} else {
			seen[g.Index] = i
		}
		if len(g.Name) > MaxGPUNameBytes {
			bad = append(bad, fmt.Sprintf("%sname is %d bytes long, at most %d are allowed", p, len(g.Name), MaxGPUNameBytes))
		}
		within(p+"vram_total_gb", g.VRAMTotalGB, MaxVRAMPerGPUGB)
		within(p+"vram_free_gb", g.VRAMFreeGB, MaxVRAMPerGPUGB)
		if g.VRAMFreeGB > g.VRAMTotalGB+vramSlack {
			bad = append(bad, fmt.Sprintf("%svram_free_gb is %v, must not exceed vram_total_gb %v", p, g.VRAMFreeGB, g.VRAMTotalGB))
		}
		u := g.UtilizationPct
		if math.IsNaN(u) || (u != -1 && (u < 0 || u > 100)) {
			bad = append(bad, fmt.Sprintf("%sutilization_pct is %v, must be -1 (unknown) or between 0 and 100", p, u))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidSample, strings.Join(bad, "; "))
	}
	return nil
}

// vendorTypes is GPUTypes without "none": the values that name a vendor.
func vendorTypes() []string { return fleet.GPUVendors }
