package probe

import (
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// readNVMLLocked lists NVIDIA GPUs through NVML. p.mu must be held.
//
// The order of calls matters more than usual here. nvml.Init without a
// driver returns ERROR_LIBRARY_NOT_FOUND, and any other NVML call after a
// failed Init aborts the whole process with an unresolved symbol, which no
// recover can catch. So Init runs once, its failure is remembered for the
// life of the Prober, and nothing else is called unless it succeeded.
func (p *Prober) readNVMLLocked() ([]GPU, error) {
	if !p.nvmlInitDone {
		p.nvmlInitDone = true
		if ret := p.cfg.NVML.Init(); ret != nvml.SUCCESS {
			p.nvmlInitErr = fmt.Errorf("nvml init: %s", nvmlErrString(ret))
			if ret == nvml.ERROR_LIBRARY_NOT_FOUND || ret == nvml.ERROR_DRIVER_NOT_LOADED {
				p.nvmlInitErr = fmt.Errorf("nvml init: %s: %w", nvmlErrString(ret), errUnavailable)
			}
		} else {
			p.nvmlInitOK = true
		}
	}
	if !p.nvmlInitOK {
		return nil, p.nvmlInitErr
	}

	lib := p.cfg.NVML
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml device count: %s", nvmlErrString(ret))
	}
	var gpus []GPU
	var errs []error
	for i := range count {
		dev, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			// One lost GPU (ERROR_GPU_IS_LOST) must not hide the others.
			errs = append(errs, fmt.Errorf("nvml device %d handle: %s", i, nvmlErrString(ret)))
			continue
		}
		g := GPU{Index: i, Name: "NVIDIA GPU", UtilizationPct: -1}
		if name, ret := dev.GetName(); ret == nvml.SUCCESS && name != "" {
			g.Name = name
		}
		if m, ret := dev.GetMemoryInfo(); ret == nvml.SUCCESS {
			g.VRAMTotalGB = bytesToGB(m.Total)
			g.VRAMFreeGB = min(bytesToGB(m.Free), g.VRAMTotalGB)
		} else {
			// Keep the card with zero VRAM: nothing gets scheduled on a
			// card we cannot measure, but it still shows up in the list.
			errs = append(errs, fmt.Errorf("nvml device %d memory: %s", i, nvmlErrString(ret)))
		}
		if u, ret := dev.GetUtilizationRates(); ret == nvml.SUCCESS {
			g.UtilizationPct = float64(min(u.Gpu, 100))
		}
		// Any other utilization result (typically ERROR_NOT_SUPPORTED on
		// consumer cards and vGPUs) leaves -1: unknown, not an error.
		gpus = append(gpus, g)
	}
	return gpus, errors.Join(errs...)
}

// nvmlErrString names an NVML return code. Return.Error is safe even when
// the library failed to load: go-nvml then uses a pure-Go table instead of
// nvmlErrorString.
func nvmlErrString(ret nvml.Return) string {
	return ret.Error()
}
