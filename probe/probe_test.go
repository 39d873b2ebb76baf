package probe

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSampleHost_RealMachine(t *testing.T) {
	h, err := SampleHost(context.Background())
	if err != nil {
		t.Fatalf("SampleHost: %v", err)
	}
	if h.CPUCoresPhysical < 1 {
		t.Errorf("physical cores = %d, want >= 1", h.CPUCoresPhysical)
	}
	if h.MemoryAvailableGB <= 0 {
		t.Errorf("memory available = %v GB, want > 0", h.MemoryAvailableGB)
	}
	if h.MemoryPercent < 0 || h.MemoryPercent > 100 || h.CPULoad1 < 0 {
		t.Errorf("implausible host sample %+v", h)
	}
}

// TestProber_RealMachine runs the full default pipeline, real NVML
// included: on a machine without a driver, Init fails and nothing else may
// be called, which is exactly what would crash the process if done wrong.
func TestProber_RealMachine(t *testing.T) {
	logger, _ := newTestLogger(t)
	p := newProber(t, Config{
		Logger:        logger,
		NvidiaSMIPath: filepath.Join(t.TempDir(), "absent-nvidia-smi"),
	})
	for range 2 {
		s := mustSample(t, p)
		if s.Source != SourceHost || s.CPUCoresPhysical < 1 || s.MemoryAvailableGB <= 0 || s.CPUCoresAvailable < 1 {
			t.Errorf("sample = %+v", s)
		}
		if err := Validate(s); err != nil {
			t.Errorf("real sample does not validate: %v", err)
		}
		t.Logf("sample: %+v", s)
	}
}

func TestProber_HostErrors(t *testing.T) {
	calls := 0
	failing := func(context.Context) (HostSample, error) {
		calls++
		// Memory was readable, load was not: the partial reading is kept.
		h := HostSample{CPUCoresPhysical: 4, MemoryPercent: 12.345, MemoryAvailableGB: 3}
		if calls > 3 {
			return h, nil
		}
		return h, errors.New("load average: open /proc/loadavg: permission denied")
	}
	logger, logs := newTestLogger(t)
	p := newProber(t, Config{HostSource: failing, DisableNVML: true, DisableNvidiaSMI: true, DisableSysfs: true, Logger: logger})
	for range 3 {
		s := mustSample(t, p)
		if s.CPUCoresPhysical != 4 || s.MemoryPercent != 12.35 || s.CPULoad1 != 0 || s.CPUCoresAvailable != 4 {
			t.Fatalf("sample = %+v", s)
		}
		if s.GPUType != GPUTypeNone {
			t.Fatalf("gpu_type = %q, want none", s.GPUType)
		}
	}
	if got := logs.lines("source=host", "level=WARN", "permission denied"); len(got) != 1 {
		t.Errorf("want one host warning over 3 samples, got %q", got)
	}
	mustSample(t, p)
	if got := logs.lines("source=host", "recovered"); len(got) != 1 {
		t.Errorf("want one recovery line, got %q", got)
	}
}

func TestProber_UnknownCoresGiveZeroAvailable(t *testing.T) {
	logger, _ := newTestLogger(t)
	p := newProber(t, Config{
		HostSource:  func(context.Context) (HostSample, error) { return HostSample{}, errors.New("no /proc") },
		DisableNVML: true, DisableNvidiaSMI: true, DisableSysfs: true,
		Logger: logger,
	})
	if s := mustSample(t, p); s.CPUCoresAvailable != 0 || s.GPUType != GPUTypeNone {
		t.Errorf("sample = %+v, want zeros and gpu_type none", s)
	}
}

func TestProber_Lifecycle(t *testing.T) {
	if _, err := New(Config{NvidiaSMITimeout: -time.Second}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("negative timeout: err = %v, want ErrInvalidConfig", err)
	}

	logger, _ := newTestLogger(t)
	p, err := New(Config{NVML: failingNVML(), DisableNvidiaSMI: true, DisableSysfs: true, Logger: logger, HostSource: fixedHost(testHost)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Sample(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: err = %v, want context.Canceled", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if s, err := p.Sample(context.Background()); !errors.Is(err, ErrClosed) || s.GPUType != GPUTypeNone {
		t.Errorf("after Close: %+v, %v; want ErrClosed", s, err)
	}
}

func TestProber_ConcurrentSamples(t *testing.T) {
	logger, _ := newTestLogger(t)
	root := fakeDRM(t, withPrefix("card0/device/", radeon))
	p := newProber(t, Config{NVML: failingNVML(), DisableNvidiaSMI: true, SysfsRoot: root, Logger: logger, HostSource: fixedHost(testHost)})
	errc := make(chan error, 8)
	for range 8 {
		go func() {
			s, err := p.Sample(context.Background())
			if err == nil && s.GPUType != GPUTypeAMD {
				err = errors.New("gpu_type " + s.GPUType)
			}
			errc <- err
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.SysfsRoot != "/" || c.NvidiaSMIPath != "nvidia-smi" || c.NvidiaSMITimeout != 5*time.Second {
		t.Errorf("DefaultConfig = %+v", c)
	}
	if !strings.Contains(strings.Join(GPUTypes, ","), GPUTypeNone) {
		t.Errorf("GPUTypes %v lacks none", GPUTypes)
	}
}

func BenchmarkSample(b *testing.B) {
	b.Run("host", func(b *testing.B) {
		logger, _ := newTestLogger(b)
		p := newProber(b, Config{DisableNVML: true, DisableNvidiaSMI: true, DisableSysfs: true, Logger: logger})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.Sample(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("host-fallthrough", func(b *testing.B) {
		// Every GPU source tried and failing, as on a CPU-only machine:
		// real NVML (no driver), nvidia-smi not on PATH, real /sys.
		logger, _ := newTestLogger(b)
		p := newProber(b, Config{Logger: logger, NvidiaSMIPath: "chiffon-absent-nvidia-smi"})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.Sample(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("metrics-file", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "metrics.json")
		writeFile(b, path, goodMetrics)
		logger, _ := newTestLogger(b)
		p := newProber(b, Config{MetricsFile: path, Logger: logger})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.Sample(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
