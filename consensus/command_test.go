package consensus

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// t0 is the leader's clock in tests.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func testRecord(id string, status Status) Record {
	return Record{
		AgentID:         id,
		Name:            "host-" + id,
		Roles:           []string{"desktop"},
		GossipAddr:      "10.0.0.1:7946",
		Status:          status,
		LastHeartbeatAt: t0,
		Metrics: ResourceMetrics{
			CPUCoresPhysical: 8, GPUCount: 1, GPUType: "RTX 4090",
			GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: 20, GPUVRAMMaxFreeGB: 20,
			GPUs: []GPU{{Index: 0, Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: 3}},
		},
	}
}

func TestCommand_RoundTrip(t *testing.T) {
	tests := []struct {
		name string
		cmd  Command
	}{
		{"upsert one", UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline)}}},
		{"upsert batch", UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline), testRecord("b", StatusSuspect)}}},
		{"upsert pointer", &UpsertNodes{At: t0, Nodes: []Record{{AgentID: "x"}}}},
		{"delete", DeleteNodes{At: t0, AgentIDs: []string{"a", "b"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeCommand(tt.cmd)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if CommandType(b[0]) != tt.cmd.Type() {
				t.Fatalf("type byte %d, want %d", b[0], tt.cmd.Type())
			}
			got, err := DecodeCommand(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			want := tt.cmd
			if p, ok := want.(*UpsertNodes); ok {
				want = *p // decode returns values
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, want)
			}
		})
	}
}

func TestCommand_Invalid(t *testing.T) {
	encodeTests := []struct {
		name string
		cmd  Command
	}{
		{"nil", nil},
		{"upsert no time", UpsertNodes{Nodes: []Record{{AgentID: "a"}}}},
		{"upsert empty", UpsertNodes{At: t0}},
		{"upsert no id", UpsertNodes{At: t0, Nodes: []Record{{Name: "a"}}}},
		{"delete no time", DeleteNodes{AgentIDs: []string{"a"}}},
		{"delete empty", DeleteNodes{At: t0}},
		{"delete empty id", DeleteNodes{At: t0, AgentIDs: []string{"a", ""}}},
	}
	for _, tt := range encodeTests {
		t.Run("encode "+tt.name, func(t *testing.T) {
			if _, err := EncodeCommand(tt.cmd); !errors.Is(err, ErrBadCommand) {
				t.Fatalf("err = %v, want ErrBadCommand", err)
			}
		})
	}
	decodeTests := []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"type only", []byte{byte(CmdUpsertNodes)}},
		{"unknown type", append([]byte{99}, `{"at":"2025-03-01T12:00:00Z"}`...)},
		{"zero type", append([]byte{0}, `{}`...)},
		{"bad json", append([]byte{byte(CmdUpsertNodes)}, `{"at":`...)},
		{"trailing data", append([]byte{byte(CmdDeleteNodes)}, `{"at":"2025-03-01T12:00:00Z","agent_ids":["a"]} x`...)},
		{"wrong shape", append([]byte{byte(CmdDeleteNodes)}, `{"at":"2025-03-01T12:00:00Z","agent_ids":"a"}`...)},
		{"missing time", append([]byte{byte(CmdDeleteNodes)}, `{"agent_ids":["a"]}`...)},
		{"record without id", append([]byte{byte(CmdUpsertNodes)}, `{"at":"2025-03-01T12:00:00Z","nodes":[{"name":"a"}]}`...)},
	}
	for _, tt := range decodeTests {
		t.Run("decode "+tt.name, func(t *testing.T) {
			if c, err := DecodeCommand(tt.b); !errors.Is(err, ErrBadCommand) {
				t.Fatalf("DecodeCommand = %#v, %v; want ErrBadCommand", c, err)
			}
		})
	}
}

// TestCommand_JSONFieldNames pins the wire names other components and
// stored logs depend on.
func TestCommand_JSONFieldNames(t *testing.T) {
	b, err := EncodeCommand(UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{
		`"agent_id"`, `"resource_metrics"`, `"cpu_load_1min"`, `"cpu_load_5min"`, `"cpu_load_15min"`,
		`"cpu_cores_physical"`, `"cpu_cores_available"`, `"memory_percent"`, `"memory_available_gb"`,
		`"gpu_vram_total_gb"`, `"gpu_vram_available_gb"`, `"gpu_vram_max_free_gb"`, `"gpu_count"`,
		`"gpu_type"`, `"gpus"`, `"index"`, `"vram_total_gb"`, `"vram_free_gb"`, `"utilization_pct"`,
	} {
		if !strings.Contains(string(b), field) {
			t.Errorf("encoded command lacks %s: %s", field, b)
		}
	}
}
