package probe

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

const goodMetrics = `{
  "cpu_load_1min": 2.5, "cpu_load_5min": 2, "cpu_load_15min": 1.5,
  "cpu_cores_physical": 16,
  "memory_percent": 35.5, "memory_available_gb": 40,
  "gpu_type": "nvidia",
  "gpus": [
    {"index": 0, "name": "NVIDIA GeForce RTX 4090", "vram_total_gb": 24, "vram_free_gb": 20, "utilization_pct": 5},
    {"index": 1, "name": "NVIDIA GeForce RTX 3090", "vram_total_gb": 24, "vram_free_gb": 22.5, "utilization_pct": -1}
  ]
}`

// metricsProber returns a Prober reading a metrics file in a temp dir, the
// file's path, and the captured log.
func metricsProber(t *testing.T, content string) (*Prober, string, *logBuffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "metrics.json")
	if content != "" {
		writeFile(t, path, content)
	}
	logger, logs := newTestLogger(t)
	// Every function of this NVML mock panics, Init included: metrics file
	// mode must not touch the hardware.
	p := newProber(t, Config{MetricsFile: path, Logger: logger, NVML: &mock.Interface{}})
	return p, path, logs
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMetricsFile_Good(t *testing.T) {
	p, _, _ := metricsProber(t, goodMetrics)
	before := time.Now()
	s := mustSample(t, p)
	if s.Source != SourceMetricsFile || s.TakenAt.Before(before) {
		t.Errorf("source %q taken %v, want metrics-file taken after %v", s.Source, s.TakenAt, before)
	}
	if s.CPUCoresPhysical != 16 || s.CPULoad1 != 2.5 || s.MemoryPercent != 35.5 || s.MemoryAvailableGB != 40 {
		t.Errorf("host fields = %+v", s)
	}
	// cpu_cores_available is absent: computed from physical and load1.
	if s.CPUCoresAvailable != 13.5 {
		t.Errorf("cpu_cores_available = %v, want 13.5", s.CPUCoresAvailable)
	}
	// gpus without totals: totals are the sums.
	if s.GPUVRAMTotalGB != 48 || s.GPUVRAMAvailableGB != 42.5 || s.MaxFreeVRAMGB() != 22.5 {
		t.Errorf("VRAM totals %v/%v max %v, want 48/42.5 max 22.5", s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB, s.MaxFreeVRAMGB())
	}
}

func TestMetricsFile_ChangeIsSeen(t *testing.T) {
	p, path, _ := metricsProber(t, goodMetrics)
	if s := mustSample(t, p); s.GPUType != GPUTypeNVIDIA {
		t.Fatalf("first sample gpu_type = %q", s.GPUType)
	}
	writeFile(t, path, `{"cpu_cores_physical": 4, "cpu_load_1min": 0.5, "memory_percent": 10, "memory_available_gb": 7,
		"gpu_type": "amd", "gpu_vram_total_gb": 16, "gpu_vram_available_gb": 12}`)
	s := mustSample(t, p)
	if s.GPUType != GPUTypeAMD || s.CPUCoresPhysical != 4 || s.CPUCoresAvailable != 3.5 {
		t.Errorf("after change: %+v", s)
	}
	// Totals only: kept as given, no invented gpus.
	if len(s.GPUs) != 0 || s.GPUVRAMTotalGB != 16 || s.MaxFreeVRAMGB() != 12 {
		t.Errorf("totals-only file gave gpus %+v, total %v, max free %v", s.GPUs, s.GPUVRAMTotalGB, s.MaxFreeVRAMGB())
	}
}

func TestMetricsFile_BadKeepsLastGoodAndLogsOnce(t *testing.T) {
	p, path, logs := metricsProber(t, goodMetrics)
	good := mustSample(t, p)

	writeFile(t, path, `{"cpu_cores_physical": 4,`)
	for i := range 5 {
		s, err := p.Sample(context.Background())
		if !errors.Is(err, ErrMetricsFile) {
			t.Fatalf("sample %d: err = %v, want ErrMetricsFile", i, err)
		}
		if s.CPUCoresPhysical != good.CPUCoresPhysical || len(s.GPUs) != 2 || !s.TakenAt.Equal(good.TakenAt) {
			t.Fatalf("sample %d = %+v, want the last good one", i, s)
		}
		// The caller's copy must not alias the Prober's.
		s.GPUs[0].Name = "scribbled"
	}
	if n := len(logs.lines("source=metrics-file", "level=WARN")); n != 1 {
		t.Errorf("malformed file logged %d times over 5 samples, want 1", n)
	}

	// A different error is a new state: logged once more.
	writeFile(t, path, `{"memory_percent": 250}`)
	for range 3 {
		_, err := p.Sample(context.Background())
		if !errors.Is(err, ErrMetricsFile) || !errors.Is(err, ErrInvalidSample) || !strings.Contains(err.Error(), "memory_percent is 250") {
			t.Fatalf("err = %v, want ErrMetricsFile and ErrInvalidSample naming memory_percent", err)
		}
	}
	if n := len(logs.lines("source=metrics-file", "level=WARN")); n != 2 {
		t.Errorf("two distinct errors logged %d times, want 2", n)
	}

	// Recovery is logged once and the new content wins.
	writeFile(t, path, goodMetrics)
	s := mustSample(t, p)
	if s.GPUs[0].Name != "NVIDIA GeForce RTX 4090" {
		t.Errorf("recovered sample gpu 0 = %q", s.GPUs[0].Name)
	}
	mustSample(t, p)
	if n := len(logs.lines("source=metrics-file", "recovered")); n != 1 {
		t.Errorf("recovery logged %d times, want 1", n)
	}
}

func TestMetricsFile_MissingWithoutLastGood(t *testing.T) {
	p, path, logs := metricsProber(t, "")
	for range 3 {
		s, err := p.Sample(context.Background())
		if !errors.Is(err, ErrMetricsFile) || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err = %v, want ErrMetricsFile wrapping ErrNotExist", err)
		}
		if s.GPUType != GPUTypeNone || s.CPUCoresPhysical != 0 || s.GPUVRAMTotalGB != 0 || len(s.GPUs) != 0 {
			t.Errorf("sample = %+v, want zero with gpu_type none", s)
		}
	}
	got := logs.lines("source=metrics-file")
	if len(got) != 1 || !strings.Contains(got[0], path) {
		t.Errorf("want one log line naming %s, got %q", path, got)
	}
}

func TestMetricsFile_TooLarge(t *testing.T) {
	p, _, _ := metricsProber(t, `{"cpu_cores_physical": 1}`+strings.Repeat(" ", maxMetricsFileSize))
	if _, err := p.Sample(context.Background()); !errors.Is(err, ErrMetricsFile) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("err = %v, want a size error", err)
	}
}

func TestDecodeMetrics(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		check   func(t *testing.T, s Sample)
		wantErr string
	}{
		{
			name: "empty object is an idle CPU-less box",
			in:   `{}`,
			check: func(t *testing.T, s Sample) {
				if s.GPUType != GPUTypeNone || s.CPUCoresAvailable != 1 {
					t.Errorf("got %+v, want gpu_type none and the AvailableCores floor of 1", s)
				}
			},
		},
		{
			name: "explicit cpu_cores_available is kept",
			in:   `{"cpu_cores_physical": 8, "cpu_load_1min": 1, "cpu_cores_available": 2}`,
			check: func(t *testing.T, s Sample) {
				if s.CPUCoresAvailable != 2 {
					t.Errorf("cpu_cores_available = %v, want 2", s.CPUCoresAvailable)
				}
			},
		},
		{
			name: "totals given with gpus are kept",
			in:   `{"gpu_type": "amd", "gpu_vram_total_gb": 30, "gpu_vram_available_gb": 10, "gpus": [{"index": 0, "name": "x", "vram_total_gb": 24, "vram_free_gb": 20}]}`,
			check: func(t *testing.T, s Sample) {
				if s.GPUVRAMTotalGB != 30 || s.GPUVRAMAvailableGB != 10 {
					t.Errorf("totals = %v/%v, want 30/10", s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB)
				}
			},
		},
		{
			name:    "gpu_type missing with VRAM",
			in:      `{"gpu_vram_total_gb": 8, "gpu_vram_available_gb": 8}`,
			wantErr: "gpu_type is required when gpus or gpu_vram_total_gb are given; allowed: nvidia, amd, intel",
		},
		{name: "unknown field", in: `{"gpu_vram_total": 8}`, wantErr: `unknown field "gpu_vram_total"`},
		{name: "trailing data", in: `{} {}`, wantErr: "trailing data"},
		{name: "not JSON", in: `cpu_load_1min=1`, wantErr: "decode"},
		{name: "wrong type", in: `{"cpu_cores_physical": "eight"}`, wantErr: "decode"},
		{name: "array", in: `[]`, wantErr: "decode"},
		{name: "empty file", in: ``, wantErr: "decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := decodeMetrics([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			tt.check(t, s)
		})
	}
}

func TestValidate(t *testing.T) {
	valid := Sample{
		CPULoad1: 1, CPULoad5: 1, CPULoad15: 1, CPUCoresPhysical: 8, CPUCoresAvailable: 7,
		MemoryPercent: 50, MemoryAvailableGB: 16,
		GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: 20, GPUType: GPUTypeNVIDIA,
		GPUs: []GPU{{Index: 0, Name: "RTX", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: -1}},
	}
	tests := []struct {
		name   string
		modify func(s *Sample)
		want   []string // substrings of the error; none means valid
	}{
		{"valid", func(*Sample) {}, nil},
		{"no GPU", func(s *Sample) { *s = Sample{GPUType: GPUTypeNone} }, nil},
		{"negative load", func(s *Sample) { s.CPULoad5 = -0.1 }, []string{"cpu_load_5min is -0.1, must be >= 0"}},
		{"negative cores", func(s *Sample) { s.CPUCoresPhysical = -2 }, []string{"cpu_cores_physical is -2"}},
		{"negative available cores", func(s *Sample) { s.CPUCoresAvailable = -1 }, []string{"cpu_cores_available"}},
		{"memory over 100", func(s *Sample) { s.MemoryPercent = 100.5 }, []string{"memory_percent is 100.5, must be between 0 and 100"}},
		{"negative memory", func(s *Sample) { s.MemoryAvailableGB = -3 }, []string{"memory_available_gb is -3"}},
		{"NaN load", func(s *Sample) { s.CPULoad1 = math.NaN() }, []string{"cpu_load_1min is NaN, must be a finite number"}},
		{"infinite VRAM", func(s *Sample) { s.GPUVRAMTotalGB = math.Inf(1) }, []string{"gpu_vram_total_gb is +Inf"}},
		{"available above total", func(s *Sample) { s.GPUVRAMAvailableGB = 30 }, []string{"gpu_vram_available_gb is 30, must not exceed gpu_vram_total_gb 24"}},
		{"unknown gpu_type", func(s *Sample) { s.GPUType = "Radeon" }, []string{`gpu_type is "Radeon", must be one of nvidia, amd, intel, none`}},
		{"empty gpu_type", func(s *Sample) { s.GPUType = "" }, []string{`gpu_type is ""`}},
		{"none with VRAM", func(s *Sample) { s.GPUType = GPUTypeNone }, []string{`gpu_type is "none" but gpus or gpu_vram_total_gb are given`}},
		{"gpu free above total", func(s *Sample) { s.GPUs[0].VRAMFreeGB = 25 }, []string{"gpus[0].vram_free_gb is 25, must not exceed vram_total_gb 24"}},
		{"gpu negative index", func(s *Sample) { s.GPUs[0].Index = -1 }, []string{"gpus[0].index is -1"}},
		{"gpu utilization", func(s *Sample) { s.GPUs[0].UtilizationPct = 120 }, []string{"gpus[0].utilization_pct is 120, must be -1 (unknown) or between 0 and 100"}},
		{"gpu utilization -0.5", func(s *Sample) { s.GPUs[0].UtilizationPct = -0.5 }, []string{"gpus[0].utilization_pct is -0.5"}},
		{"several at once", func(s *Sample) { s.CPULoad1 = -1; s.MemoryPercent = 101 }, []string{"cpu_load_1min", "memory_percent"}},
		{"absurd load", func(s *Sample) { s.CPULoad15 = 1e300 }, []string{"cpu_load_15min is 1e+300, must be at most 1e+06"}},
		{"absurd memory", func(s *Sample) { s.MemoryAvailableGB = 1e300 }, []string{"memory_available_gb is 1e+300, must be at most 1.048576e+06"}},
		{"absurd cores", func(s *Sample) { s.CPUCoresPhysical = 1 << 20 }, []string{"cpu_cores_physical is 1.048576e+06, must be at most 4096"}},
		{"absurd gpu VRAM", func(s *Sample) { s.GPUs[0].VRAMTotalGB = 1e300 }, []string{"gpus[0].vram_total_gb is 1e+300, must be at most 4096"}},
		{"duplicate GPU index", func(s *Sample) {
			s.GPUs = append(s.GPUs, GPU{Index: 0, Name: "RTX", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: -1})
			s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB = 48, 40
		}, []string{"gpus[1].index is 0, the same as gpus[0].index"}},
		{"too many GPUs", func(s *Sample) {
			s.GPUs = make([]GPU, MaxGPUs+1)
			for i := range s.GPUs {
				s.GPUs[i] = GPU{Index: i, VRAMTotalGB: 1, UtilizationPct: -1}
			}
		}, []string{"gpus has 65 entries, at most 64"}},
		{"long GPU name", func(s *Sample) { s.GPUs[0].Name = strings.Repeat("x", MaxGPUNameBytes+1) }, []string{"gpus[0].name is 257 bytes long"}},
		{"at the bounds", func(s *Sample) {
			*s = Sample{CPULoad1: MaxCPULoad, CPULoad5: MaxCPULoad, CPULoad15: MaxCPULoad, CPUCoresPhysical: MaxCPUCores,
				CPUCoresAvailable: MaxCPUCores, MemoryPercent: 100, MemoryAvailableGB: MaxMemoryGB, GPUType: GPUTypeNVIDIA}
			for i := range MaxGPUs {
				s.GPUs = append(s.GPUs, GPU{Index: i, Name: strings.Repeat("n", MaxGPUNameBytes), VRAMTotalGB: MaxVRAMPerGPUGB,
					VRAMFreeGB: MaxVRAMPerGPUGB, UtilizationPct: 100})
				s.GPUVRAMTotalGB += MaxVRAMPerGPUGB
				s.GPUVRAMAvailableGB += MaxVRAMPerGPUGB
			}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := valid
			s.GPUs = slices.Clone(valid.GPUs)
			tt.modify(&s)
			err := Validate(s)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidSample) {
				t.Fatalf("Validate = %v, want ErrInvalidSample", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func FuzzMetricsFile(f *testing.F) {
	f.Add([]byte(goodMetrics))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"gpu_type": "amd", "gpu_vram_total_gb": 16, "gpu_vram_available_gb": 12}`))
	f.Add([]byte(`{"memory_percent": 250}`))
	f.Add([]byte(`{"gpus": [{"vram_total_gb": 1e308, "vram_free_gb": 1e308}, {"vram_total_gb": 1e308, "vram_free_gb": 1e308}], "gpu_type": "intel"}`))
	f.Add([]byte(`{"cpu_cores_physical": -9223372036854775808, "cpu_load_1min": 1e308}`))
	f.Add([]byte(`{"taken_at": "2024-01-01T00:00:00Z", "source": "x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := decodeMetrics(data)
		if err != nil {
			return
		}
		if err := Validate(s); err != nil {
			t.Fatalf("decodeMetrics accepted a sample Validate rejects: %v", err)
		}
		if !slices.Contains(GPUTypes, s.GPUType) {
			t.Fatalf("gpu_type %q not in GPUTypes", s.GPUType)
		}
		if s.CPUCoresAvailable <= 0 {
			t.Fatalf("cpu_cores_available = %v, want > 0", s.CPUCoresAvailable)
		}
		if m := s.MaxFreeVRAMGB(); m < 0 || math.IsNaN(m) {
			t.Fatalf("MaxFreeVRAMGB = %v", m)
		}
	})
}
