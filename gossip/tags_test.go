package gossip

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/probe"
)

const (
	// longAddr is the longest IPv4 address. Full-length IPv6 addresses for
	// all three addresses cost 78 bytes more: names are then shortened first.
	longAddr = "255.255.255.255:65535"
	uuidStr  = "3f2b8c1e-9d4a-4e7b-8c2d-1a2b3c4d5e6f"
)

// gpus builds n GPUs with realistic worst-case values: long names, 80 GB
// cards with fractional free memory and three-digit utilisation.
func gpus(n int, names ...string) []probe.GPU {
	out := make([]probe.GPU, n)
	for i := range out {
		out[i] = probe.GPU{Index: i, Name: names[i%len(names)], VRAMTotalGB: 79.6,
			VRAMFreeGB: 79.6 - float64(i)*3.3, UtilizationPct: 100}
	}
	return out
}

func worstInfo(g []probe.GPU) NodeInfo {
	s := probe.Sample{CPULoad1: 123.45, CPULoad5: 123.45, CPULoad15: 123.45, CPUCoresPhysical: 128,
		CPUCoresAvailable: 127.99, MemoryPercent: 99.9, MemoryAvailableGB: 1023.9,
		GPUType: probe.GPUTypeNVIDIA, GPUs: g, TakenAt: time.Date(2026, 11, 29, 23, 59, 59, 950e6, time.UTC)}
	for _, x := range g {
		s.GPUVRAMTotalGB += x.VRAMTotalGB
		s.GPUVRAMAvailableGB += x.VRAMFreeGB
	}
	return NodeInfo{AgentID: uuidStr, Roles: []string{RoleDesktop, RoleOrchestrator},
		APIAddr: longAddr, RaftAddr: longAddr, RaftCommands: 255, WorkSlots: 16, WorkAddr: "https://" + longAddr, Sample: s, // a TLS work endpoint
		Owner: OwnerActive, OwnerSince: time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC), MAC: "0a:1b:2c:3d:4e:5f"}
}

func TestEncodeTags_WorstCaseEightGPUsFitsWithHeadroom(t *testing.T) {
	cases := []struct {
		name  string
		names []string
	}{
		{"same long name", []string{"NVIDIA GeForce RTX 4090 Laptop GPU"}},
		{"two long names", []string{"NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA RTX 6000 Ada Generation"}},
		{"eight different names", []string{"NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA RTX 6000 Ada Generation",
			"NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 3090 Ti",
			"NVIDIA RTX A6000", "NVIDIA L40S", "Tesla V100-SXM2-32GB"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The operator's own tags must fit beside ours.
			user := map[string]string{"rack": "lab-3", "owner": "ml-team"}
			tags, err := EncodeTags(user, worstInfo(gpus(8, tc.names...)))
			if err != nil {
				t.Fatal(err)
			}
			size := EncodedSize(tags)
			t.Logf("%s: %d bytes of %d (gpus=%q gn=%q)", tc.name, size, MaxTagBytes, tags[TagGPUs], tags[TagGPUNames])
			if size > MaxTagBytes-64 {
				t.Fatalf("encoded %d bytes: want at least 64 bytes of headroom under %d", size, MaxTagBytes)
			}
			info, err := DecodeTags(tags)
			if err != nil {
				t.Fatal(err)
			}
			if !info.Detail || len(info.Sample.GPUs) != 8 {
				t.Fatalf("per-GPU detail lost: detail=%v gpus=%d", info.Detail, len(info.Sample.GPUs))
			}
			if info.GPUCount != 8 || info.MaxFreeVRAMGB != 79.6 {
				t.Fatalf("aggregates: count=%d maxfree=%v", info.GPUCount, info.MaxFreeVRAMGB)
			}
			if tags["rack"] != "lab-3" || tags["owner"] != "ml-team" {
				t.Fatalf("operator tags lost: %v", tags)
			}
		})
	}
}

func TestEncodeTags_DegradesUnderPressure(t *testing.T) {
	// An operator who spends most of the budget on their own tags squeezes
	// out per-GPU detail, but never the aggregates a placement needs. (150
	// bytes of the operator's own beside a worst-case desktop, which also
	// carries its sample time, owner state and MAC address.)
	user := map[string]string{"note": strings.Repeat("x", 150)}
	tags, err := EncodeTags(user, worstInfo(gpus(8, "NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA RTX 6000 Ada Generation")))
	if err != nil {
		t.Fatal(err)
	}
	if n := EncodedSize(tags); n > MaxTagBytes {
		t.Fatalf("%d bytes > %d", n, MaxTagBytes)
	}
	info, err := DecodeTags(tags)
	if err != nil {
		t.Fatal(err)
	}
	if info.GPUCount != 8 || info.MaxFreeVRAMGB != 79.6 || info.Sample.GPUVRAMTotalGB == 0 {
		t.Fatalf("aggregates lost: %+v", info)
	}
	// And a budget that cannot hold even the aggregates is an error.
	user["note"] = strings.Repeat("x", 450)
	if _, err := EncodeTags(user, worstInfo(nil)); !errors.Is(err, ErrTagsTooLarge) {
		t.Fatalf("err = %v, want ErrTagsTooLarge", err)
	}
}

func TestEncodeTags_RoundTrip(t *testing.T) {
	cases := []struct {
		name string
		info NodeInfo
	}{
		{"no gpu", NodeInfo{AgentID: uuidStr, Roles: []string{RoleDesktop}, Sample: probe.Sample{
			CPULoad1: 0.5, CPULoad5: 0.25, CPULoad15: 0.125, CPUCoresPhysical: 8, CPUCoresAvailable: 7.5,
			MemoryPercent: 41.2, MemoryAvailableGB: 18.3, GPUType: probe.GPUTypeNone}}},
		{"one gpu", NodeInfo{AgentID: uuidStr, Roles: []string{RoleDesktop}, APIAddr: "10.0.0.7:8480", Sample: probe.Sample{
			CPUCoresPhysical: 16, CPUCoresAvailable: 16, GPUType: probe.GPUTypeNVIDIA, GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: 20.5,
			GPUs: []probe.GPU{{Index: 0, Name: "NVIDIA GeForce RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 20.5, UtilizationPct: 3}}}}},
		{"totals only", NodeInfo{AgentID: uuidStr, Roles: []string{RoleDesktop}, Sample: probe.Sample{
			GPUType: probe.GPUTypeAMD, GPUVRAMTotalGB: 16, GPUVRAMAvailableGB: 12}}},
		{"work handler", NodeInfo{AgentID: uuidStr, Roles: []string{RoleDesktop}, WorkSlots: 2, WorkAddr: "10.0.0.7:7380",
			Sample: probe.Sample{GPUType: probe.GPUTypeNone}}},
		{"orchestrator only", NodeInfo{AgentID: uuidStr, Roles: []string{RoleOrchestrator}, APIAddr: "127.0.0.1:8480", RaftAddr: "127.0.0.1:8300"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tags, err := EncodeTags(nil, tc.info)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeTags(tags)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.info
			if got.AgentID != want.AgentID || got.APIAddr != want.APIAddr || got.RaftAddr != want.RaftAddr ||
				got.WorkSlots != want.WorkSlots || got.WorkAddr != want.WorkAddr ||
				strings.Join(got.Roles, ",") != strings.Join(want.Roles, ",") {
				t.Fatalf("identity: got %+v want %+v", got, want)
			}
			if !want.HasRole(RoleDesktop) {
				if _, ok := tags[TagCPU]; ok {
					t.Fatalf("orchestrator-only node gossips metrics: %v", tags)
				}
				return
			}
			gs, ws := got.Sample, want.Sample
			if gs.CPULoad1 != ws.CPULoad1 || gs.CPUCoresPhysical != ws.CPUCoresPhysical || gs.CPUCoresAvailable != ws.CPUCoresAvailable ||
				gs.MemoryPercent != ws.MemoryPercent || gs.MemoryAvailableGB != ws.MemoryAvailableGB || gs.GPUType != ws.GPUType ||
				gs.GPUVRAMTotalGB != ws.GPUVRAMTotalGB || gs.GPUVRAMAvailableGB != ws.GPUVRAMAvailableGB {
				t.Fatalf("sample: got %+v want %+v", gs, ws)
			}
			if got.MaxFreeVRAMGB != ws.MaxFreeVRAMGB() {
				t.Fatalf("max free = %v want %v", got.MaxFreeVRAMGB, ws.MaxFreeVRAMGB())
			}
			if len(gs.GPUs) != len(ws.GPUs) {
				t.Fatalf("gpus: got %+v want %+v", gs.GPUs, ws.GPUs)
			}
			for i := range gs.GPUs {
				if gs.GPUs[i] != ws.GPUs[i] {
					t.Fatalf("gpu %d: got %+v want %+v", i, gs.GPUs[i], ws.GPUs[i])
				}
			}
		})
	}
}

func TestEncodeTags_MergesOperatorTagsAndDropsStaleOwnKeys(t *testing.T) {
	current := map[string]string{"rack": "b2", TagGPUs: "0:8:8", TagGPUNames: "old", TagRaftAddr: "1.2.3.4:1"}
	info := NodeInfo{AgentID: uuidStr, Roles: []string{RoleDesktop}, Sample: probe.Sample{GPUType: probe.GPUTypeNone}}
	tags, err := EncodeTags(current, info)
	if err != nil {
		t.Fatal(err)
	}
	if tags["rack"] != "b2" {
		t.Fatalf("operator tag lost: %v", tags)
	}
	for _, k := range []string{TagGPUs, TagGPUNames, TagRaftAddr} {
		if _, ok := tags[k]; ok {
			t.Fatalf("stale %s kept: %v", k, tags)
		}
	}
	if current[TagGPUs] != "0:8:8" {
		t.Fatal("EncodeTags modified its input")
	}
}

func TestDecodeTags_Errors(t *testing.T) {
	base, err := EncodeTags(nil, worstInfo(gpus(2, "A", "B")))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]map[string]string{
		"not chiffon":   {"role": "web"},
		"newer version": {TagVersion: "2"},
		"bad version":   {TagVersion: "x"},
		"short cpu":     {TagCPU: "1/2"},
		"negative mem":  {TagMem: "-1/2"},
		"nan vram":      {TagVRAM: "NaN/1/1/1"},
		"bad gpu":       {TagGPUs: "x:8"},
		"bad name idx":  {TagGPUs: "8:1:9"},
		"bad util":      {TagGPUs: "8:101"},
		"bad work":      {TagWork: "x@1.2.3.4:5"},
		"work no addr":  {TagWork: "2"},
		"bad time":      {TagSampledAt: "yesterday"},
		"bad owner":     {TagOwner: "x:1"},
		"bad owner at":  {TagOwner: "a:-5"},
		"bad mac":       {TagMAC: "0a:1b:2c"},
		"bad raft cmds": {TagRaftCmds: "0"},
	}
	for name, patch := range cases {
		t.Run(name, func(t *testing.T) {
			tags := maps.Clone(base)
			if name == "not chiffon" {
				tags = patch
			}
			maps.Copy(tags, patch)
			if _, err := DecodeTags(tags); !errors.Is(err, ErrBadTags) {
				t.Fatalf("err = %v, want ErrBadTags", err)
			}
		})
	}
}

// TestEncodedSize_Table records the tag sizes quoted in docs/PERFORMANCE.md.
func TestEncodedSize_Table(t *testing.T) {
	for _, n := range []int{0, 1, 8} {
		info := worstInfo(gpus(n, "NVIDIA GeForce RTX 4090 Laptop GPU"))
		if n == 0 {
			info.Sample.GPUType = probe.GPUTypeNone
		}
		info.Roles = []string{RoleDesktop}
		info.APIAddr, info.RaftAddr, info.WorkSlots = "192.168.100.200:8480", "", 0
		tags, err := EncodeTags(nil, info)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("desktop with %d GPU(s): %d bytes", n, EncodedSize(tags))
	}
}

func FuzzDecodeTags(f *testing.F) {
	tags, _ := EncodeTags(nil, worstInfo(gpus(3, "A", "B")))
	f.Add(tags[TagVersion], tags[TagCPU], tags[TagMem], tags[TagVRAM], tags[TagGPUs], tags[TagGPUNames])
	f.Add("1", "", "", "", "1:5:0;2::1:7", "x@8|y@16")
	f.Fuzz(func(t *testing.T, ver, cpu, mem, vram, g, gn string) {
		in := map[string]string{TagVersion: ver, TagCPU: cpu, TagMem: mem, TagVRAM: vram, TagGPUs: g, TagGPUNames: gn}
		info, err := DecodeTags(in)
		if err != nil {
			return
		}
		for _, x := range info.Sample.GPUs {
			if x.VRAMTotalGB < 0 || x.VRAMFreeGB < 0 {
				t.Fatalf("negative VRAM decoded from %v", in)
			}
		}
		// Whatever decodes must encode again within budget.
		info.Roles = []string{RoleDesktop}
		if len(fmt.Sprint(info)) < 4096 {
			if _, err := EncodeTags(nil, info); err != nil && !errors.Is(err, ErrTagsTooLarge) {
				t.Fatalf("re-encode: %v", err)
			}
		}
	})
}

// TestEncodeTags_LargestValidSampleFits: whatever probe.Validate accepts
// (every figure at its bound, 64 GPUs with the longest names) still encodes
// within serf's budget, so a metrics file that passes validation can never
// make a heartbeat fail with "tags too large".
func TestEncodeTags_LargestValidSampleFits(t *testing.T) {
	s := probe.Sample{CPULoad1: probe.MaxCPULoad, CPULoad5: probe.MaxCPULoad, CPULoad15: probe.MaxCPULoad,
		CPUCoresPhysical: probe.MaxCPUCores, CPUCoresAvailable: probe.MaxCPUCores, MemoryPercent: 100,
		MemoryAvailableGB: probe.MaxMemoryGB, GPUType: probe.GPUTypeNVIDIA}
	for i := range probe.MaxGPUs {
		s.GPUs = append(s.GPUs, probe.GPU{Index: i, Name: strings.Repeat("N", probe.MaxGPUNameBytes),
			VRAMTotalGB: probe.MaxVRAMPerGPUGB - 0.01, VRAMFreeGB: probe.MaxVRAMPerGPUGB - 0.02, UtilizationPct: 100})
		s.GPUVRAMTotalGB += probe.MaxVRAMPerGPUGB - 0.01
		s.GPUVRAMAvailableGB += probe.MaxVRAMPerGPUGB - 0.02
	}
	if err := probe.Validate(s); err != nil {
		t.Fatalf("the test's sample should be valid: %v", err)
	}
	info := worstInfo(nil)
	info.Sample = s
	tags, err := EncodeTags(map[string]string{"rack": "lab-3"}, info)
	if err != nil {
		t.Fatalf("EncodeTags: %v", err)
	}
	if n := EncodedSize(tags); n > MaxTagBytes {
		t.Fatalf("encoded %d bytes > %d", n, MaxTagBytes)
	}
	got, err := DecodeTags(tags)
	if err != nil {
		t.Fatal(err)
	}
	if got.GPUCount != probe.MaxGPUs || got.Sample.CPUCoresPhysical != probe.MaxCPUCores {
		t.Fatalf("aggregates lost: count=%d cores=%d", got.GPUCount, got.Sample.CPUCoresPhysical)
	}
}

// TestEncodeTags_DesktopState round-trips the sample time, the owner's
// state, the sleep flag and the MAC address, and refuses values a decoder
// could not read back.
func TestEncodeTags_DesktopState(t *testing.T) {
	taken := time.Date(2026, 11, 29, 23, 15, 48, 260e6, time.UTC)
	since := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	in := NodeInfo{AgentID: uuidStr, Roles: []string{RoleDesktop},
		Sample: probe.Sample{CPUCoresPhysical: 4, CPUCoresAvailable: 4, TakenAt: taken},
		Owner:  OwnerIdle, OwnerSince: since, Asleep: true, MAC: "0A-1B-2C-3D-4E-5F"}
	tags, err := EncodeTags(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	if tags[TagOwner] != "i:"+fmt.Sprint(since.Unix()) || tags[TagPower] != "s" || tags[TagMAC] != "0a:1b:2c:3d:4e:5f" {
		t.Fatalf("tags = %v", tags)
	}
	out, err := DecodeTags(tags)
	if err != nil {
		t.Fatal(err)
	}
	// To 0.1 s and never later than the sample (.26 travels as .2, not
	// .3): the VRAM ledger counts work started before it as in the sample.
	if d := taken.Sub(out.Sample.TakenAt); d < 0 || d >= 100*time.Millisecond {
		t.Fatalf("sampled at %v, want %v rounded down to 0.1 s", out.Sample.TakenAt, taken)
	}
	if out.Owner != OwnerIdle || !out.OwnerSince.Equal(since) || !out.Asleep || out.MAC != "0a:1b:2c:3d:4e:5f" {
		t.Fatalf("decoded %+v", out)
	}
	// An awake desktop with no owner source carries none of the keys.
	in.Owner, in.Asleep, in.MAC = "", false, ""
	in.Sample.TakenAt = time.Time{}
	tags, err = EncodeTags(tags, in)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{TagSampledAt, TagOwner, TagPower, TagMAC} {
		if _, ok := tags[k]; ok {
			t.Fatalf("stale %s=%q kept", k, tags[k])
		}
	}
	for _, bad := range []NodeInfo{{Roles: []string{RoleDesktop}, Owner: "away"}, {Roles: []string{RoleDesktop}, MAC: "zz"}} {
		if _, err := EncodeTags(nil, bad); !errors.Is(err, ErrBadTags) {
			t.Fatalf("EncodeTags(%+v) err = %v, want ErrBadTags", bad, err)
		}
	}
}

// TestEncodeTags_RaftCommands: an orchestrator says which raft commands
// it applies; a node that does not say decodes as 0 (0.1.0).
func TestEncodeTags_RaftCommands(t *testing.T) {
	tags, err := EncodeTags(nil, NodeInfo{AgentID: uuidStr, Roles: []string{RoleOrchestrator}, RaftAddr: "10.0.0.1:8300", RaftCommands: 8})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeTags(tags); err != nil || got.RaftCommands != 8 || tags[TagRaftCmds] != "8" {
		t.Fatalf("decoded %+v, %v from %v", got, err, tags)
	}
	delete(tags, TagRaftCmds)
	if got, err := DecodeTags(tags); err != nil || got.RaftCommands != 0 {
		t.Fatalf("without the tag: %+v, %v", got, err)
	}
}
