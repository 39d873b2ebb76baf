package sim

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestReadProcStat_Self reads this process's CPU time and memory through
// /proc/PID, as process mode reads the leader's, and compares them with
// what the process knows of itself.
func TestReadProcStat_Self(t *testing.T) {
	before, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn 300 ms of CPU on this goroutine.
	start, x := processCPU(), 0
	for processCPU()-start < 300*time.Millisecond {
		x++
	}
	after, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := after.cpu - before.cpu; d < 250*time.Millisecond {
		t.Errorf("CPU time grew by %s while this process burned 300 ms", d)
	}
	now, peak := rss("self")
	if after.rssMiB <= 0 || after.peak < after.rssMiB || after.rssMiB > 2*now || now > 2*after.rssMiB || peak < now {
		t.Errorf("RSS %.1f MiB (peak %.1f) by pid, %.1f MiB (peak %.1f) as self", after.rssMiB, after.peak, now, peak)
	}
	if _, err := readProcStat(-1); err == nil {
		t.Error("readProcStat(-1) read something")
	}
}

// TestConfig_ProcessModeRefusesSimnet: the simulated network's faults
// cannot reach other processes, so process mode refuses them; a time
// scale it takes.
func TestConfig_ProcessModeRefusesSimnet(t *testing.T) {
	for name, edit := range map[string]func(*Config){
		"loss":      func(c *Config) { c.Loss = 0.02 },
		"latency":   func(c *Config) { c.Latency = time.Millisecond },
		"jitter":    func(c *Config) { c.Jitter = time.Millisecond },
		"partition": func(c *Config) { c.Partition = 1 },
	} {
		c := DefaultConfig()
		c.Latency, c.OrchestratorMode = 0, OrchestratorsProcess
		edit(&c)
		if err := c.validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "-orchestrators") {
			t.Errorf("%s: %v, want ErrInvalidConfig naming -orchestrators", name, err)
		}
	}
	c := DefaultConfig()
	c.Latency, c.OrchestratorMode = 0, OrchestratorsProcess
	if err := c.validate(); err != nil || c.OrchestratorBinary == "" {
		t.Errorf("plain process mode: %v, binary %q; want valid, defaulting to this executable", err, c.OrchestratorBinary)
	}
	// Timings are not the network's: the orchestrator processes run
	// them scaled (chiffon sim-orchestrator).
	c = DefaultConfig()
	c.Latency, c.OrchestratorMode, c.TimeScale, c.RaftSlack = 0, OrchestratorsProcess, 0.2, 4
	if err := c.validate(); err != nil {
		t.Errorf("process mode at -time-scale 0.2 -raft-slack 4: %v; want valid", err)
	}
	// Loss applied outside (scripts/sim-loss.sh) is recorded in process
	// mode only, and only as a share.
	c = DefaultConfig()
	c.Latency, c.OrchestratorMode, c.UDPLossOutside = 0, OrchestratorsProcess, 0.02
	if err := c.validate(); err != nil {
		t.Errorf("process mode with -udp-loss-outside 0.02: %v; want valid", err)
	}
	c.UDPLossOutside = 2
	if err := c.validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "-udp-loss-outside") {
		t.Errorf("-udp-loss-outside 2: %v, want ErrInvalidConfig naming it", err)
	}
	c = DefaultConfig()
	c.UDPLossOutside = 0.02
	if err := c.validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "-loss") {
		t.Errorf("in-process with -udp-loss-outside: %v, want ErrInvalidConfig pointing at -loss", err)
	}
}

// TestChildEnv_OrchestratorsRunAsAnOperatorWould: the orchestrator
// processes get the shell's environment but not its CHIFFON_* settings
// (the sim's flags configure them) nor the Go runtime tuning meant for the
// simulating process (GOGC, GOMEMLIMIT), which made the leader's heap
// and so its reported RSS larger than an operator's agent.
func TestChildEnv_OrchestratorsRunAsAnOperatorWould(t *testing.T) {
	t.Setenv("GOGC", "400")
	t.Setenv("GOMEMLIMIT", "16GiB")
	t.Setenv("CHIFFON_HEARTBEAT_INTERVAL", "1s")
	t.Setenv("SIM_TEST_KEPT", "yes")
	env := childEnv()
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == "GOGC" || k == "GOMEMLIMIT" || strings.HasPrefix(k, "CHIFFON_") {
			t.Errorf("orchestrators would get %s", kv)
		}
	}
	if !slices.Contains(env, "SIM_TEST_KEPT=yes") || !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		t.Errorf("the rest of the environment is not passed on: %v", env)
	}
}
