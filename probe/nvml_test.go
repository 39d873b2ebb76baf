package probe

import (
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

func TestNVML_DGXH100(t *testing.T) {
	srv := dgxh100.New()
	// The server mock leaves utilization unset (calling it would panic)
	// and reports every card full; give it something to measure.
	for i, d := range srv.Devices {
		dev := d.(*server.Device)
		dev.MemoryInfo.Free = uint64(70-i) << 30
		dev.MemoryInfo.Used = dev.MemoryInfo.Total - dev.MemoryInfo.Free
		util := uint32(10 * i)
		ret := nvml.SUCCESS
		if i == 3 {
			ret = nvml.ERROR_NOT_SUPPORTED
		}
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: util}, ret
		}
	}
	logger, logs := newTestLogger(t)
	p, err := New(Config{NVML: srv, DisableNvidiaSMI: true, DisableSysfs: true, Logger: logger, HostSource: fixedHost(testHost)})
	if err != nil {
		t.Fatal(err)
	}

	s := mustSample(t, p)
	if s.GPUType != GPUTypeNVIDIA {
		t.Errorf("gpu_type = %q, want nvidia", s.GPUType)
	}
	if len(s.GPUs) != 8 {
		t.Fatalf("got %d GPUs, want 8", len(s.GPUs))
	}
	for i, g := range s.GPUs {
		if g.Index != i || g.Name != "NVIDIA H100 80GB HBM3" || g.VRAMTotalGB != 80 || g.VRAMFreeGB != float64(70-i) {
			t.Errorf("gpu %d = %+v", i, g)
		}
		want := float64(10 * i)
		if i == 3 {
			want = -1
		}
		if g.UtilizationPct != want {
			t.Errorf("gpu %d utilization = %v, want %v", i, g.UtilizationPct, want)
		}
	}
	if s.GPUVRAMTotalGB != 640 {
		t.Errorf("gpu_vram_total_gb = %v, want 640", s.GPUVRAMTotalGB)
	}
	if want := float64(70*8 - 28); s.GPUVRAMAvailableGB != want {
		t.Errorf("gpu_vram_available_gb = %v, want %v", s.GPUVRAMAvailableGB, want)
	}
	if s.MaxFreeVRAMGB() != 70 {
		t.Errorf("MaxFreeVRAMGB = %v, want 70", s.MaxFreeVRAMGB())
	}
	if err := Validate(s); err != nil {
		t.Errorf("hardware sample does not validate: %v", err)
	}
	mustSample(t, p)
	if n := len(srv.InitCalls()); n != 1 {
		t.Errorf("Init called %d times, want once", n)
	}
	if n := len(logs.lines("GPU source selected", "source=nvml")); n != 1 {
		t.Errorf("source selection logged %d times, want once", n)
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := len(srv.ShutdownCalls()); n != 1 {
		t.Errorf("Shutdown called %d times, want once", n)
	}
}

// TestNVML_InitFailsNeverCallsAnythingElse uses a mock whose every function
// but Init is nil, so any other call panics: after a failed Init the real
// library would abort the process instead.
func TestNVML_InitFailsNeverCallsAnythingElse(t *testing.T) {
	tests := []struct {
		name  string
		ret   nvml.Return
		level string
	}{
		{"library not found", nvml.ERROR_LIBRARY_NOT_FOUND, "level=INFO"},
		{"driver not loaded", nvml.ERROR_DRIVER_NOT_LOADED, "level=INFO"},
		{"unknown", nvml.ERROR_UNKNOWN, "level=WARN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lib := &mock.Interface{InitFunc: func() nvml.Return { return tt.ret }}
			smi := writeScript(t, "echo '0, NVIDIA GeForce RTX 4090, 24564, 20000, 7'\n")
			logger, logs := newTestLogger(t)
			p := newProber(t, Config{NVML: lib, NvidiaSMIPath: smi, DisableSysfs: true, Logger: logger, HostSource: fixedHost(testHost)})

			for range 3 {
				s := mustSample(t, p)
				// nvidia-smi, the next source, takes over.
				if s.GPUType != GPUTypeNVIDIA || len(s.GPUs) != 1 || s.GPUs[0].Name != "NVIDIA GeForce RTX 4090" {
					t.Fatalf("sample = %+v, want the nvidia-smi GPU", s)
				}
			}
			if n := len(lib.InitCalls()); n != 1 {
				t.Errorf("Init called %d times, want once", n)
			}
			got := logs.lines("source=nvml")
			if len(got) != 1 {
				t.Fatalf("nvml logged %d lines, want 1: %q", len(got), got)
			}
			if !strings.Contains(got[0], tt.level) || !strings.Contains(got[0], tt.ret.Error()) {
				t.Errorf("log line %q lacks %s or %s", got[0], tt.level, tt.ret.Error())
			}
			// Close must not call Shutdown either (it is nil: it would panic).
		})
	}
}

func TestNVML_DeviceErrors(t *testing.T) {
	good := func(name string, totalGiB, freeGiB uint64) *mock.Device {
		return &mock.Device{
			GetNameFunc: func() (string, nvml.Return) { return name, nvml.SUCCESS },
			GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
				return nvml.Memory{Total: totalGiB << 30, Free: freeGiB << 30}, nvml.SUCCESS
			},
			GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 50}, nvml.SUCCESS },
		}
	}
	noMem := good("Broken", 0, 0)
	noMem.GetNameFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN }
	noMem.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	noMem.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.ERROR_GPU_IS_LOST }
	devices := []nvml.Device{good("A", 24, 20), nil, noMem}

	lib := &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devices), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if devices[i] == nil {
				return nil, nvml.ERROR_GPU_IS_LOST
			}
			return devices[i], nvml.SUCCESS
		},
	}
	logger, logs := newTestLogger(t)
	p := newProber(t, Config{NVML: lib, DisableNvidiaSMI: true, DisableSysfs: true, Logger: logger, HostSource: fixedHost(testHost)})
	s := mustSample(t, p)
	mustSample(t, p)

	want := []GPU{
		{Index: 0, Name: "A", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: 50},
		{Index: 2, Name: "NVIDIA GPU", UtilizationPct: -1},
	}
	if len(s.GPUs) != len(want) {
		t.Fatalf("GPUs = %+v, want %+v", s.GPUs, want)
	}
	for i := range want {
		if s.GPUs[i] != want[i] {
			t.Errorf("gpu %d = %+v, want %+v", i, s.GPUs[i], want[i])
		}
	}
	if s.GPUVRAMTotalGB != 24 || s.GPUVRAMAvailableGB != 20 {
		t.Errorf("totals = %v/%v, want 24/20", s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB)
	}
	got := logs.lines("source=nvml", "level=WARN")
	if len(got) != 1 || !strings.Contains(got[0], "device 1 handle") || !strings.Contains(got[0], "device 2 memory") {
		t.Errorf("want one WARN naming both failures, got %q", got)
	}
	if n := len(lib.InitCalls()); n != 1 {
		t.Errorf("Init called %d times, want once", n)
	}
}

func TestNVML_CountFailsFallsThrough(t *testing.T) {
	lib := &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.ERROR_UNKNOWN },
		DeviceGetCountFunc: func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN },
	}
	logger, logs := newTestLogger(t)
	p, err := New(Config{NVML: lib, DisableNvidiaSMI: true, SysfsRoot: t.TempDir(), Logger: logger, HostSource: fixedHost(testHost)})
	if err != nil {
		t.Fatal(err)
	}
	s := mustSample(t, p)
	if s.GPUType != GPUTypeNone || len(s.GPUs) != 0 || s.GPUVRAMTotalGB != 0 {
		t.Errorf("sample = %+v, want no GPU", s)
	}
	if n := len(logs.lines("source=nvml", "device count")); n != 1 {
		t.Errorf("count failure logged %d times, want 1", n)
	}
	// A failing Shutdown is reported, once.
	if err := p.Close(); err == nil || !strings.Contains(err.Error(), "nvml shutdown") {
		t.Errorf("Close = %v, want nvml shutdown error", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}
