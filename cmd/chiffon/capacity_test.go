package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

func TestCapacityCommand_Filters(t *testing.T) {
	clearHTTPEnv(t)
	t.Setenv("CHIFFON_HTTP_ADDR", startTestAPI(t, ""))
	cases := []struct {
		name string
		args []string
		want []int
	}{
		{"all online desktops", nil, []int{1, 2, 4}},
		{"vram", []string{"-min-gpu-vram-gb", "16"}, []int{1}},
		{"cores", []string{"-min-cpu-cores=10"}, []int{2}},
		{"gpu type", []string{"-gpu-type", "amd"}, []int{2}},
		{"vram total", []string{"-min-gpu-vram-gb", "5.5", "-vram-total"}, []int{1, 2}},
		{"memory", []string{"-min-memory-available-gb", "64"}, nil},
		{"stale", []string{"-stale", "-min-gpu-vram-gb", "1"}, []int{1, 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ui := cli.NewMockUi()
			code, out, errOut := runAPICmd(&capacityCommand{ui: ui}, ui, append(tc.args, "-format", "json")...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var caps []apitype.Capacity
			if err := json.Unmarshal([]byte(out), &caps); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			var got []string
			for _, c := range caps {
				got = append(got, c.AgentID)
			}
			var want []string
			for _, i := range tc.want {
				want = append(want, testAgentID(i))
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
	ui := cli.NewMockUi()
	code, out, _ := runAPICmd(&capacityCommand{ui: ui}, ui, "-min-gpu-vram-gb", "16")
	if code != 0 || !strings.HasPrefix(out, "AGENT ID") || !strings.Contains(out, "desk-1") || strings.Contains(out, "desk-2") {
		t.Fatalf("table (exit %d):\n%s", code, out)
	}
	ui = cli.NewMockUi()
	if code, out, _ := runAPICmd(&capacityCommand{ui: ui}, ui, "-min-cpu-cores", "100"); code != 0 || !strings.Contains(out, "No agent matches") {
		t.Fatalf("empty (exit %d): %s", code, out)
	}
}

// The table shows how old each desktop's sample is.
func TestCapacityCommand_TableShowsSampleAge(t *testing.T) {
	clearHTTPEnv(t)
	ui := cli.NewMockUi()
	code, out, errOut := runAPICmd(&capacityCommand{ui: ui}, ui, "-http-addr", startTestAPI(t, ""))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasSuffix(lines[0], "SAMPLE AGE") || len(lines) != 4 { // header, 3 online desktops
		t.Fatalf("table:\n%s", out)
	}
	checkSampleAges(t, lines[1:], 0)
}

func TestCapacityCommand_OneAgent(t *testing.T) {
	clearHTTPEnv(t)
	addr := startTestAPI(t, "")
	ui := cli.NewMockUi()
	code, out, errOut := runAPICmd(&capacityCommand{ui: ui}, ui, "-http-addr", addr, "-agent", testAgentID(3), "-format", "json")
	var c apitype.Capacity
	if code != 0 || json.Unmarshal([]byte(out), &c) != nil || c.Status != "offline" || c.GPUVRAMMaxFreeGB != 24 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	ui = cli.NewMockUi()
	code, _, errOut = runAPICmd(&capacityCommand{ui: ui}, ui, "-http-addr", addr, "-agent", testAgentID(99))
	if code != 1 || !strings.Contains(errOut, testAgentID(99)) || !strings.Contains(errOut, "404") {
		t.Fatalf("unknown agent: exit %d, %q", code, errOut)
	}
	ui = cli.NewMockUi()
	code, _, errOut = runAPICmd(&capacityCommand{ui: ui}, ui, "-http-addr", addr, "-agent", "nope")
	if code != 1 || !strings.Contains(errOut, "not a UUID") || !strings.Contains(errOut, "400") {
		t.Fatalf("malformed id: exit %d, %q", code, errOut)
	}
}

func TestCapacityCommand_BadFlags(t *testing.T) {
	clearHTTPEnv(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"negative", []string{"-min-gpu-vram-gb", "-1"}, "negative"},
		{"not a number", []string{"-min-cpu-cores", "many"}, "-min-cpu-cores"},
		{"nan", []string{"-min-memory-available-gb", "NaN"}, "number"},
		{"gpu type", []string{"-gpu-type", "nvida"}, "nvidia, amd, intel, none"},
		{"stale and consistent", []string{"-stale", "-consistent"}, "exclude"},
		{"agent with filters", []string{"-agent", testAgentID(1), "-min-cpu-cores", "1"}, "no filters"},
		{"format", []string{"-format", "csv"}, "table, json"},
		{"bad address", []string{"-http-addr", "ftp://x"}, "address"},
		{"cert without key", []string{"-tls-cert", "c.pem"}, "-tls-key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ui := cli.NewMockUi()
			code, _, errOut := runAPICmd(&capacityCommand{ui: ui}, ui, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, %q; want 2 and %q", code, errOut, tc.want)
			}
		})
	}
}
