package probe

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"
)

// SampleHost reads load averages, physical cores and memory through
// gopsutil. Each part is read independently: when one fails the others are
// still returned, with the failures joined into the error.
func SampleHost(ctx context.Context) (HostSample, error) {
	var h HostSample
	var errs []error

	if avg, err := load.AvgWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("load average: %w", err))
	} else {
		h.CPULoad1 = round2(avg.Load1)
		h.CPULoad5 = round2(avg.Load5)
		h.CPULoad15 = round2(avg.Load15)
	}

	cores, err := physicalCores(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	h.CPUCoresPhysical = cores

	if vm, err := mem.VirtualMemoryWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("virtual memory: %w", err))
	} else {
		h.MemoryPercent = round2(vm.UsedPercent)
		h.MemoryAvailableGB = bytesToGB(vm.Available)
	}
	return h, errors.Join(errs...)
}

// physicalCores returns the physical core count. Containers and some VMs
// hide the topology gopsutil needs (it then reports 0), so it falls back to
// logical CPUs and finally to what the Go runtime sees: over-counting cores
// on a hyperthreaded box is better than a desktop that offers none.
func physicalCores(ctx context.Context) (int, error) {
	n, err := cpu.CountsWithContext(ctx, false)
	if err == nil && n > 0 {
		return n, nil
	}
	if n, err := cpu.CountsWithContext(ctx, true); err == nil && n > 0 {
		return n, nil
	}
	if err != nil {
		// Not fatal: runtime.NumCPU is always available. Report it so the
		// operator knows the figure is logical, not physical.
		return runtime.NumCPU(), fmt.Errorf("cpu counts: %w (using runtime.NumCPU)", err)
	}
	return runtime.NumCPU(), nil
}
