package sim

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// scenario is the suite's small fleet: see TestRun_SmallFleet.
//
// 10 desktops at scale 4, with or without -race. Measured on the shared
// 2-core machine (docs/PERFORMANCE.md, "The suite's scenario"): under
// -race 20 desktops at scale 5 starved raft and did not settle in 30 s,
// 10 pass in about 30 s. The larger fleet runs without -race in
// TestRun_Fleet (fleet_test.go). SIM_DESKTOPS and SIM_SCALE override
// for measurements.
func scenario(t *testing.T) Config {
	c := DefaultConfig()
	c.Desktops, c.TimeScale = 10, 4
	if v, err := strconv.Atoi(os.Getenv("SIM_DESKTOPS")); err == nil && v > 0 {
		c.Desktops = v
	}
	if v, err := strconv.ParseFloat(os.Getenv("SIM_SCALE"), 64); err == nil && v > 0 {
		c.TimeScale = v
	}
	// The crash comes 11 s in; offline is due 90 s after it.
	c.Duration = 110 * time.Second
	c.Kill, c.Churn, c.Partition = 1, 1, 3
	c.PartitionFor = 20 * time.Second
	c.HeartbeatInterval = 10 * time.Second
	c.SettleTimeout = 40 * time.Second
	c.Dir = t.TempDir()
	c.Progress = func(s string) { t.Log(s) }
	return c
}

// TestRun_SmallFleet runs a small fleet at scaled timings with one crash,
// one desktop that leaves and rejoins, and three cut off for 20 s: the
// crashed desktop is offline 90 s after its silence (within the probe
// period's randomness and the scale's timer precision), everyone else is
// online at the end and nothing was falsely offline.
func TestRun_SmallFleet(t *testing.T) {
	cfg := scenario(t)
	cfg.CPUProfile = filepath.Join(t.TempDir(), "cpu.pprof")
	cfg.HeapProfile = filepath.Join(t.TempDir(), "heap.pprof")
	start := time.Now()
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("%d desktops at scale %v in %s wall:\n%s", cfg.Desktops, cfg.TimeScale, time.Since(start).Round(time.Millisecond), b)
	if len(rep.OfflineAfterS) != 1 || rep.OfflineAfterS[0] < 85 || rep.OfflineAfterS[0] > 95 {
		t.Errorf("crashed desktop offline after %v s, want 90 ± 5", rep.OfflineAfterS)
	}
	if rep.FalseOffline != 0 {
		t.Errorf("false_offline %d, want 0", rep.FalseOffline)
	}
	if rep.ChurnBackOnline != 1 || rep.PartitionBackOnline != 3 {
		t.Errorf("back online: %d of 1 churned, %d of 3 cut off", rep.ChurnBackOnline, rep.PartitionBackOnline)
	}
	// tag_hops accounts for every change seen, and pushes carried some.
	if h := rep.TagHops; h == nil {
		t.Error("no tag_hops with telemetry pushes on")
	} else if h.Landed == 0 || h.Landed+h.Overtaken != rep.TagChangesSeen || h.ViaGossip == h.Landed || h.PushP50S < 0 {
		t.Errorf("tag_hops %+v do not account for the %d changes seen", *h, rep.TagChangesSeen)
	}
	// -cpu-profile and -heap-profile: pprof files with samples, the CPU
	// one labelled by node (how the leader's CPU is told apart).
	for _, path := range []string{cfg.CPUProfile, cfg.HeapProfile} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		prof, err := profile.Parse(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(prof.Sample) == 0 {
			t.Errorf("%s: no samples", path)
		}
		if path == cfg.CPUProfile && !slices.ContainsFunc(prof.Sample, func(s *profile.Sample) bool { return len(s.Label["node"]) > 0 }) {
			t.Errorf("%s: no sample carries a node label", path)
		}
	}
}

// A profile that cannot be written is refused before the run starts, not
// after it.
func TestRun_UnwritableProfileRefusedAtOnce(t *testing.T) {
	cfg := scenario(t)
	cfg.HeapProfile = filepath.Join(t.TempDir(), "no-such-dir", "heap.pprof")
	start := time.Now()
	_, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "-heap-profile") {
		t.Fatalf("Run: %v; want ErrInvalidConfig naming -heap-profile", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refused after %s; the run should not have started", d)
	}
}
