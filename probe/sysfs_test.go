package probe

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeDRM writes files under root/sys/class/drm: keys are paths relative
// to that directory, values the file contents.
func fakeDRM(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		path := filepath.Join(root, "sys", "class", "drm", rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// radeon is a Radeon RX 7900 XTX: 24 GiB, 4 GiB used, 37 % busy.
var radeon = map[string]string{
	"vendor":              "0x1002\n",
	"mem_info_vram_total": "25769803776\n",
	"mem_info_vram_used":  "4294967296\n",
	"gpu_busy_percent":    "37\n",
}

func withPrefix(prefix string, files map[string]string) map[string]string {
	out := make(map[string]string, len(files))
	for k, v := range files {
		out[prefix+k] = v
	}
	return out
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestSysfs(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		wantType string
		want     []GPU
		wantLog  string // a WARN line for sysfs must contain this; "" means no sysfs line
	}{
		{
			name: "AMD card with connector and Intel iGPU",
			files: merge(
				withPrefix("card0/device/", radeon),
				// Connector entries carry their own files; they must not
				// count as a second card.
				withPrefix("card0-DP-1/device/", radeon),
				map[string]string{"card0-DP-1/status": "connected\n"},
				map[string]string{"card1/device/vendor": "0x8086\n"},
				map[string]string{"renderD128/device/vendor": "0x1002\n"},
				map[string]string{"version": "drm 1.1.0 20060810\n"},
			),
			wantType: GPUTypeAMD,
			want: []GPU{
				{Index: 0, Name: "AMD GPU", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: 37},
				{Index: 1, Name: "Intel GPU", UtilizationPct: -1},
			},
		},
		{
			name:     "Intel iGPU only",
			files:    map[string]string{"card0/device/vendor": "0x8086\n", "card0-eDP-1/enabled": "enabled\n"},
			wantType: GPUTypeIntel,
			want:     []GPU{{Index: 0, Name: "Intel GPU", UtilizationPct: -1}},
		},
		{
			name: "Intel Arc with VRAM and product name",
			files: map[string]string{
				"card1/device/vendor":              "0x8086\n",
				"card1/device/product_name":        "Intel Arc A770\n",
				"card1/device/mem_info_vram_total": "17179869184\n",
			},
			wantType: GPUTypeIntel,
			want:     []GPU{{Index: 1, Name: "Intel Arc A770", VRAMTotalGB: 16, VRAMFreeGB: 16, UtilizationPct: -1}},
		},
		{
			name: "cards sorted numerically, NVIDIA skipped",
			files: merge(
				withPrefix("card10/device/", radeon),
				withPrefix("card2/device/", radeon),
				map[string]string{"card3/device/vendor": "0x10de\n"},
				map[string]string{"card4/device/class": "0x030000\n"}, // no vendor file
			),
			wantType: GPUTypeAMD,
			want: []GPU{
				{Index: 2, Name: "AMD GPU", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: 37},
				{Index: 10, Name: "AMD GPU", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: 37},
			},
		},
		{
			name: "garbled VRAM file still reports the card",
			files: map[string]string{
				"card0/device/vendor":              "0x1002\n",
				"card0/device/mem_info_vram_total": "lots\n",
				"card0/device/gpu_busy_percent":    "oops\n",
			},
			wantType: GPUTypeAMD,
			want:     []GPU{{Index: 0, Name: "AMD GPU", UtilizationPct: -1}},
			wantLog:  `mem_info_vram_total: \"lots\" is not a number`,
		},
		{
			name:     "used above total clamps to zero free",
			files:    map[string]string{"card0/device/vendor": "0x1002", "card0/device/mem_info_vram_total": "1073741824", "card0/device/mem_info_vram_used": "2147483648"},
			wantType: GPUTypeAMD,
			want:     []GPU{{Index: 0, Name: "AMD GPU", VRAMTotalGB: 1, UtilizationPct: -1}},
		},
		{
			name:     "no drm directory",
			files:    map[string]string{},
			wantType: GPUTypeNone,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeDRM(t, tt.files)
			logger, logs := newTestLogger(t)
			p := newProber(t, Config{DisableNVML: true, DisableNvidiaSMI: true, SysfsRoot: root, Logger: logger, HostSource: fixedHost(testHost)})
			s := mustSample(t, p)
			mustSample(t, p)

			if s.GPUType != tt.wantType {
				t.Errorf("gpu_type = %q, want %q", s.GPUType, tt.wantType)
			}
			if len(s.GPUs) != len(tt.want) {
				t.Fatalf("GPUs = %+v, want %+v", s.GPUs, tt.want)
			}
			var total, free float64
			for i := range tt.want {
				if s.GPUs[i] != tt.want[i] {
					t.Errorf("gpu %d = %+v, want %+v", i, s.GPUs[i], tt.want[i])
				}
				total += tt.want[i].VRAMTotalGB
				free += tt.want[i].VRAMFreeGB
			}
			if s.GPUVRAMTotalGB != total || s.GPUVRAMAvailableGB != free {
				t.Errorf("totals = %v/%v, want %v/%v", s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB, total, free)
			}
			if err := Validate(s); err != nil {
				t.Errorf("sysfs sample does not validate: %v", err)
			}
			got := logs.lines("source=sysfs", "level=WARN")
			switch {
			case tt.wantLog == "" && len(got) != 0:
				t.Errorf("unexpected sysfs warnings %q", got)
			case tt.wantLog != "" && (len(got) != 1 || !strings.Contains(got[0], tt.wantLog)):
				t.Errorf("want one warning containing %q, got %q", tt.wantLog, got)
			}
		})
	}
}

func TestCardNumber(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		isOK bool
	}{
		{"card0", 0, true},
		{"card12", 12, true},
		{"card0-DP-1", 0, false},
		{"card1-HDMI-A-1", 0, false},
		{"card", 0, false},
		{"renderD128", 0, false},
		{"card+1", 0, false},
		{"version", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n, ok := cardNumber(tt.in)
			if n != tt.n || ok != tt.isOK {
				t.Errorf("cardNumber(%q) = %d, %v; want %d, %v", tt.in, n, ok, tt.n, tt.isOK)
			}
		})
	}
}
