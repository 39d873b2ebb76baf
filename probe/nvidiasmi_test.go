package probe

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseNvidiaSMI(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []GPU
		wantErr string
	}{
		{
			name: "single desktop card",
			in:   "0, NVIDIA GeForce RTX 4090, 24564, 23870, 3\n",
			want: []GPU{{Index: 0, Name: "NVIDIA GeForce RTX 4090", VRAMTotalGB: 23.99, VRAMFreeGB: 23.31, UtilizationPct: 3}},
		},
		{
			name: "two cards, no trailing newline",
			in:   "0, NVIDIA A100-SXM4-80GB, 81920, 81000, 0\n1, NVIDIA A100-SXM4-80GB, 81920, 40960, 100",
			want: []GPU{
				{Index: 0, Name: "NVIDIA A100-SXM4-80GB", VRAMTotalGB: 80, VRAMFreeGB: 79.1, UtilizationPct: 0},
				{Index: 1, Name: "NVIDIA A100-SXM4-80GB", VRAMTotalGB: 80, VRAMFreeGB: 40, UtilizationPct: 100},
			},
		},
		{
			name: "utilization N/A",
			in:   "0, NVIDIA GRID T4-16Q, 16384, 15000, [N/A]\n",
			want: []GPU{{Index: 0, Name: "NVIDIA GRID T4-16Q", VRAMTotalGB: 16, VRAMFreeGB: 14.65, UtilizationPct: -1}},
		},
		{
			name: "utilization not supported",
			in:   "0, Tesla K80, 11441, 11441, [Not Supported]\n",
			want: []GPU{{Index: 0, Name: "Tesla K80", VRAMTotalGB: 11.17, VRAMFreeGB: 11.17, UtilizationPct: -1}},
		},
		{
			name: "memory N/A is zero",
			in:   "0, NVIDIA H100 MIG, [N/A], [N/A], 5\n",
			want: []GPU{{Index: 0, Name: "NVIDIA H100 MIG", UtilizationPct: 5}},
		},
		{
			name: "blank lines, CRLF and extra spaces",
			in:   "\r\n   0 ,  Quadro RTX 6000 , 24576 , 24576 , 0 \r\n\n",
			want: []GPU{{Index: 0, Name: "Quadro RTX 6000", VRAMTotalGB: 24, VRAMFreeGB: 24, UtilizationPct: 0}},
		},
		{name: "empty output", in: "", want: nil},
		{name: "only blank lines", in: "\n\n  \n", want: nil},
		{name: "driver failure text", in: "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", wantErr: "want 5 comma-separated fields, got 1"},
		{name: "too few fields", in: "0, RTX, 1024, 512\n", wantErr: "got 4"},
		{name: "too many fields", in: "0, RTX, 1024, 512, 1, 2\n", wantErr: "got 6"},
		{name: "header line", in: "index, name, memory.total [MiB], memory.free [MiB], utilization.gpu [%]\n", wantErr: `index "index"`},
		{name: "negative index", in: "-1, RTX, 1024, 512, 1\n", wantErr: "index"},
		{name: "empty name", in: "0, , 1024, 512, 1\n", wantErr: "empty name"},
		{name: "units left in", in: "0, RTX, 1024 MiB, 512 MiB, 1 %\n", wantErr: "memory.total"},
		{name: "negative memory", in: "0, RTX, -1024, 512, 1\n", wantErr: "memory.total"},
		{name: "NaN memory", in: "0, RTX, NaN, 512, 1\n", wantErr: "memory.total"},
		{name: "infinite free", in: "0, RTX, 1024, +Inf, 1\n", wantErr: "memory.free"},
		{name: "free above total", in: "0, RTX, 1024, 2048, 1\n", wantErr: "exceeds"},
		{name: "utilization above 100", in: "0, RTX, 1024, 512, 101\n", wantErr: "above 100"},
		{name: "bad second line", in: "0, RTX, 1024, 512, 1\ngarbage\n", wantErr: "line 2"},
		{name: "binary garbage", in: "\x00\xff,\xfe", wantErr: "fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNvidiaSMI([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrNvidiaSMIOutput) {
					t.Fatalf("err = %v, want ErrNvidiaSMIOutput containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("gpu %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func FuzzParseNvidiaSMI(f *testing.F) {
	for _, seed := range []string{
		"0, NVIDIA GeForce RTX 4090, 24564, 23870, 3\n",
		"0, A, 81920, 81000, 0\n1, B, 81920, 40960, [N/A]",
		"0, Tesla K80, 11441, 11441, [Not Supported]\n",
		"\r\n 0 , X , [N/A] , [N/A] , 5 \r\n",
		"NVIDIA-SMI has failed\n",
		"0,,,,",
		"1e308, x, 1e308, 1e308, 100",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		gpus, err := ParseNvidiaSMI(in)
		if err != nil {
			if !errors.Is(err, ErrNvidiaSMIOutput) {
				t.Fatalf("error %v does not wrap ErrNvidiaSMIOutput", err)
			}
			return
		}
		for i, g := range gpus {
			if g.Index < 0 || g.VRAMTotalGB < 0 || g.VRAMFreeGB < 0 || g.VRAMFreeGB > g.VRAMTotalGB || g.Name == "" {
				t.Fatalf("gpu %d = %+v has an invalid value", i, g)
			}
			if g.UtilizationPct != -1 && (g.UtilizationPct < 0 || g.UtilizationPct > 100) {
				t.Fatalf("gpu %d utilization %v out of range", i, g.UtilizationPct)
			}
		}
		// Whatever parses must also pass Validate once wrapped in a Sample.
		s := Sample{GPUType: GPUTypeNVIDIA, GPUs: gpus}
		s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB = sumVRAM(gpus)
		if err := Validate(s); err != nil {
			t.Fatalf("parsed GPUs do not validate: %v", err)
		}
	})
}

func TestNvidiaSMI_FakeScript(t *testing.T) {
	// The script checks it was asked the right question, so a change to
	// the arguments cannot go unnoticed.
	smi := writeScript(t, `
[ "$1" = "--query-gpu=index,name,memory.total,memory.free,utilization.gpu" ] || exit 2
[ "$2" = "--format=csv,noheader,nounits" ] || exit 2
echo '0, NVIDIA GeForce RTX 3090, 24576, 12288, 45'
echo '1, NVIDIA GeForce RTX 3060, 12288, 12288, [N/A]'
`)
	logger, logs := newTestLogger(t)
	lib := failingNVML()
	p := newProber(t, Config{NVML: lib, NvidiaSMIPath: smi, SysfsRoot: t.TempDir(), Logger: logger, HostSource: fixedHost(testHost)})
	s := mustSample(t, p)
	if s.GPUType != GPUTypeNVIDIA || len(s.GPUs) != 2 {
		t.Fatalf("sample = %+v, want 2 nvidia GPUs", s)
	}
	if s.GPUVRAMTotalGB != 36 || s.GPUVRAMAvailableGB != 24 || s.MaxFreeVRAMGB() != 12 {
		t.Errorf("totals %v/%v max %v, want 36/24 max 12", s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB, s.MaxFreeVRAMGB())
	}
	if s.GPUs[1].UtilizationPct != -1 {
		t.Errorf("N/A utilization = %v, want -1", s.GPUs[1].UtilizationPct)
	}
	if n := len(logs.lines("GPU source selected", "source=nvidia-smi")); n != 1 {
		t.Errorf("selection logged %d times, want 1", n)
	}
}

func TestNvidiaSMI_Errors(t *testing.T) {
	tests := []struct {
		name    string
		script  string // "" means: a path that does not exist
		wantErr string
		level   string
	}{
		{"not installed", "", "not present on this machine", "level=INFO"},
		{"driver not loaded", "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\nexit 9\n", "couldn't communicate", "level=WARN"},
		{"no devices", "echo 'No devices were found' >&2\nexit 6\n", "No devices were found", "level=WARN"},
		{"garbage", "echo 'hello world'\n", "malformed nvidia-smi output", "level=WARN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			smi := filepath.Join(t.TempDir(), "no-such-nvidia-smi")
			if tt.script != "" {
				smi = writeScript(t, tt.script)
			}
			_, err := runNvidiaSMI(context.Background(), smi, time.Minute)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}

			logger, logs := newTestLogger(t)
			p := newProber(t, Config{DisableNVML: true, NvidiaSMIPath: smi, SysfsRoot: t.TempDir(), Logger: logger, HostSource: fixedHost(testHost)})
			for range 3 {
				if s := mustSample(t, p); s.GPUType != GPUTypeNone || len(s.GPUs) != 0 {
					t.Fatalf("sample = %+v, want no GPU", s)
				}
			}
			got := logs.lines("source=nvidia-smi")
			if len(got) != 1 || !strings.Contains(got[0], tt.level) {
				t.Errorf("want one %s line for nvidia-smi, got %q", tt.level, got)
			}
		})
	}
}

// TestNvidiaSMI_Timeout uses a script whose child keeps the output pipe
// open after the shell is killed: without WaitDelay this would hang for
// the child's whole sleep.
func TestNvidiaSMI_Timeout(t *testing.T) {
	smi := writeScript(t, "sleep 5\necho '0, late, 1, 1, 1'\n")
	const timeout = 200 * time.Millisecond
	logger, logs := newTestLogger(t)
	p := newProber(t, Config{DisableNVML: true, NvidiaSMIPath: smi, NvidiaSMITimeout: timeout, SysfsRoot: t.TempDir(), Logger: logger, HostSource: fixedHost(testHost)})

	start := time.Now()
	s := mustSample(t, p)
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Sample took %v with a %v timeout", elapsed, timeout)
	}
	if s.GPUType != GPUTypeNone {
		t.Errorf("gpu_type = %q, want none", s.GPUType)
	}
	got := logs.lines("source=nvidia-smi", "no answer within 200ms")
	if len(got) != 1 {
		t.Errorf("want one timeout log line, got %q", got)
	}
}

func TestNvidiaSMI_Recovers(t *testing.T) {
	dir := t.TempDir()
	smi := filepath.Join(dir, "nvidia-smi")
	logger, logs := newTestLogger(t)
	p := newProber(t, Config{DisableNVML: true, NvidiaSMIPath: smi, SysfsRoot: t.TempDir(), Logger: logger, HostSource: fixedHost(testHost)})

	mustSample(t, p) // not installed yet
	// The driver gets installed while the daemon runs.
	installed := writeScript(t, "echo '0, NVIDIA RTX A4000, 16376, 16000, 0'\n")
	p.cfg.NvidiaSMIPath = installed
	if s := mustSample(t, p); len(s.GPUs) != 1 {
		t.Fatalf("after install: %+v, want 1 GPU", s)
	}
	if n := len(logs.lines("source recovered", "source=nvidia-smi")); n != 1 {
		t.Errorf("recovery logged %d times, want 1", n)
	}
}
