// Package probe samples the resources a desktop offers: CPU load and cores,
// memory, and GPUs (NVML, nvidia-smi, or sysfs for AMD and Intel). Of
// Chiffon's packages it imports only the leaf internal/fleet (names and
// derived VRAM figures).
package probe

import (
	"time"

	"github.com/chiffon-dev/chiffon/internal/fleet"
)

// GPU types a Sample can report (package fleet's).
const (
	GPUTypeNone   = fleet.GPUTypeNone
	GPUTypeNVIDIA = fleet.GPUTypeNVIDIA
	GPUTypeAMD    = fleet.GPUTypeAMD
	GPUTypeIntel  = fleet.GPUTypeIntel
)

// GPUTypes lists every value GPUType may take, for validation and help text.
var GPUTypes = fleet.GPUTypes

// GPU describes one graphics card. Sizes are in GB (10^9 bytes is not used:
// 1 GB here is 2^30 bytes, as nvidia-smi and NVML report MiB).
type GPU struct {
	Index          int     `json:"index"`
	Name           string  `json:"name"`
	VRAMTotalGB    float64 `json:"vram_total_gb"`
	VRAMFreeGB     float64 `json:"vram_free_gb"`
	UtilizationPct float64 `json:"utilization_pct"` // -1 when unknown
}

// Sample is one reading of a machine's resources. Field names follow the seed
// API so that a metrics file, the gossip tags and the HTTP API agree.
type Sample struct {
	CPULoad1          float64 `json:"cpu_load_1min"`
	CPULoad5          float64 `json:"cpu_load_5min"`
	CPULoad15         float64 `json:"cpu_load_15min"`
	CPUCoresPhysical  int     `json:"cpu_cores_physical"`
	CPUCoresAvailable float64 `json:"cpu_cores_available"`
	MemoryPercent     float64 `json:"memory_percent"`
	MemoryAvailableGB float64 `json:"memory_available_gb"`
	// GPUVRAMTotalGB and GPUVRAMAvailableGB are sums over all GPUs.
	GPUVRAMTotalGB     float64 `json:"gpu_vram_total_gb"`
	GPUVRAMAvailableGB float64 `json:"gpu_vram_available_gb"`
	GPUType            string  `json:"gpu_type"`
	GPUs               []GPU   `json:"gpus,omitempty"`
	// Source says where the sample came from ("host", "metrics-file").
	Source  string    `json:"source,omitempty"`
	TakenAt time.Time `json:"taken_at,omitzero"`
}

// VRAM is what the sample's GPUs add up to (fleet.SumVRAM): without
// per-GPU detail, the totals describe one card.
func (s Sample) VRAM() fleet.VRAM {
	v := fleet.SumVRAM(len(s.GPUs), func(i int) (float64, float64) { return s.GPUs[i].VRAMTotalGB, s.GPUs[i].VRAMFreeGB },
		s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB)
	// The sampler's own sums stand (a metrics file's may be rounded
	// differently from its per-GPU figures).
	v.TotalGB, v.FreeGB = s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB
	return v
}

// MaxFreeVRAMGB is the largest free VRAM on a single GPU: a job that needs
// N GB of VRAM needs it on one card, so this is what capacity filters compare.
func (s Sample) MaxFreeVRAMGB() float64 { return s.VRAM().MaxFreeGB }

// AvailableCores is max(1, physical − load1), as the seed defines it.
func AvailableCores(physical int, load1 float64) float64 {
	return max(1, float64(physical)-load1)
}
