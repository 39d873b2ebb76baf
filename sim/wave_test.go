package sim

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestRun_JoinWaves builds the fleet in waves (JoinWave): every wave waits
// for the orchestrators to see the last one alive, and the run settles
// with every desktop online (a wave that waited for a count it cannot
// reach would hold the joins until the settle timeout).
func TestRun_JoinWaves(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Desktops, cfg.JoinWave, cfg.TimeScale = 12, 5, 10
	cfg.Duration = 20 * time.Second
	cfg.HeartbeatInterval = 10 * time.Second
	cfg.SettleTimeout = 40 * time.Second
	cfg.Dir = t.TempDir()
	var waves []string
	cfg.Progress = func(s string) {
		t.Log(s)
		if strings.HasPrefix(s, "wave:") {
			waves = append(waves, s)
		}
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(waves) != 2 {
		t.Errorf("%d waves waited for, want 2 (12 desktops in waves of 5): %q", len(waves), waves)
	}
	if rep.JoinWallS <= 0 || rep.SettleRealS <= 0 {
		t.Errorf("join took %v s wall, settle %v s: want both measured", rep.JoinWallS, rep.SettleRealS)
	}
	if rep.FalseOffline != 0 {
		t.Errorf("false_offline %d, want 0", rep.FalseOffline)
	}
}
