package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSim_OrchestratorProcesses runs `chiffon sim -orchestrators process`
// with 10 desktops: the orchestrators are chiffon agent processes (the
// binary built for the process tests), the registry has every desktop
// online, the leader's RSS is read from the leader's own pid, and every
// orchestrator is gone, its data dir removed, once the command returns.
func TestSim_OrchestratorProcesses(t *testing.T) {
	bin := chiffonBinary(t)
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "report.json")
	var out, errb bytes.Buffer
	code := run([]string{"sim", "-orchestrators", "process", "-orchestrator-binary", bin, "-data-dir", dir,
		"-desktops", "10", "-duration", "4s", "-settle-timeout", "60s", "-change-prob", "1",
		"-heartbeat-interval", "1s", "-report", file}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s", code, errb.String(), out.String())
	}
	t.Logf("stdout:\n%s", out.String())
	if !strings.Contains(out.String(), "registry has had all 10 desktops online") {
		t.Errorf("no line saying the registry had all 10 desktops online:\n%s", out.String())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Mode        string  `json:"orchestrator_mode"`
		LeaderRSS   float64 `json:"leader_rss_mib"`
		LeaderPeak  float64 `json:"leader_peak_rss_mib"`
		LeaderCPU   float64 `json:"leader_cpu_pct"`
		LeaderPID   int     `json:"leader_pid"`
		PIDs        []int   `json:"orchestrator_pids"`
		ProcessRSS  float64 `json:"process_rss_mib"`
		Seen        int     `json:"tag_changes_seen"`
		Elections   int     `json:"elections"`
		QueryFailed int     `json:"query_failures"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "process" {
		t.Errorf("orchestrator_mode %q, want process", rep.Mode)
	}
	if len(rep.PIDs) != 3 || !slices.Contains(rep.PIDs, rep.LeaderPID) || rep.LeaderPID == os.Getpid() {
		t.Errorf("leader_pid %d, orchestrator_pids %v (this process %d): want the leader among 3 other processes",
			rep.LeaderPID, rep.PIDs, os.Getpid())
	}
	// An agent's Go runtime alone is several MiB; a figure under 1 MiB
	// or over the peak was not read from a live agent.
	if rep.LeaderRSS < 1 || rep.LeaderPeak < rep.LeaderRSS || rep.LeaderCPU < 0 {
		t.Errorf("leader RSS %v MiB, peak %v MiB, CPU %v %%: want a positive RSS up to the peak, CPU ≥ 0",
			rep.LeaderRSS, rep.LeaderPeak, rep.LeaderCPU)
	}
	if rep.ProcessRSS < 1 {
		t.Errorf("process_rss_mib %v, want the sim's own RSS", rep.ProcessRSS)
	}
	if rep.Seen == 0 {
		t.Errorf("no tag change reached the leader's registry (every heartbeat changes the metrics)")
	}
	for _, pid := range rep.PIDs {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("orchestrator %d still there after the run (kill -0: %v)", pid, err)
		}
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the orchestrators' data dirs were not removed: %d entries left in %s", len(left), dir)
	}
}

// TestSim_OrchestratorProcessesScaled runs process mode at six times real
// speed with one crash: the orchestrator processes (chiffon
// sim-orchestrator) must run the scaled timings, or the crashed desktop
// would be offline after 90 s of wall time (540 s of the run's time), long
// after this run ends; scaled, the leader process marks it offline about
// 90 s of run time after its silence. The desktops join in waves, which
// wait on every orchestrator process's gossip (a nil-pointer panic
// before: the waves asked the in-process cluster).
func TestSim_OrchestratorProcessesScaled(t *testing.T) {
	bin := chiffonBinary(t)
	file := filepath.Join(t.TempDir(), "report.json")
	var out, errb bytes.Buffer
	code := run([]string{"sim", "-orchestrators", "process", "-orchestrator-binary", bin, "-data-dir", t.TempDir(),
		"-desktops", "10", "-duration", "130s", "-time-scale", "6", "-raft-slack", "2", "-kill", "1", "-churn", "0",
		"-join-wave", "4", "-settle-timeout", "60s", "-report", file}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s", code, errb.String(), out.String())
	}
	t.Logf("stdout:\n%s", out.String())
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Mode      string    `json:"orchestrator_mode"`
		Scale     float64   `json:"time_scale"`
		Offline   []float64 `json:"offline_after_s"`
		OnlineAgn int       `json:"killed_online_again"`
		LeaderPID int       `json:"leader_pid"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "process" || rep.Scale != 6 || rep.LeaderPID == 0 {
		t.Errorf("mode %q, time_scale %v, leader_pid %d; want process, 6 and the leader's pid", rep.Mode, rep.Scale, rep.LeaderPID)
	}
	// 90 s of suspicion after the failure is detected; a busy machine's
	// second of wall time is six of the run's.
	if len(rep.Offline) != 1 || rep.Offline[0] < 85 || rep.Offline[0] > 120 {
		t.Errorf("offline_after_s %v; want the crashed desktop offline about 90 s (of run time) after its silence", rep.Offline)
	}
	if rep.OnlineAgn != 0 {
		t.Errorf("killed_online_again %d; a crashed desktop cannot come back", rep.OnlineAgn)
	}
}

// TestSim_OrchestratorProcessesRefusesSimnetFlags: the simulated network
// cannot reach other processes, so its flags are refused with exit 2.
func TestSim_OrchestratorProcessesRefusesSimnetFlags(t *testing.T) {
	for _, extra := range [][]string{{"-loss", "0.01"}, {"-latency", "5ms"}, {"-jitter", "1ms"},
		{"-partition", "1"}} {
		args := append([]string{"sim", "-orchestrators", "process", "-desktops", "5"}, extra...)
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2; stderr %s", args, code, errb.String())
		}
		if !strings.Contains(errb.String(), "-orchestrators process") {
			t.Errorf("%q: stderr %q does not say why", args, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"sim", "-orchestrators", "remote"}, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "in-process or process") {
		t.Errorf("-orchestrators remote: exit %d, stderr %q; want 2 naming the modes", code, errb.String())
	}
}

// TestSim_OrchestratorProcessExitsDuringTheJoin: an orchestrator process
// that dies while the desktops join in waves fails the run with its
// error, promptly; the waves used to wait for it forever.
func TestSim_OrchestratorProcessExitsDuringTheJoin(t *testing.T) {
	bin := chiffonBinary(t)
	dir := t.TempDir()
	// orch-2 is killed 8 s after it starts (exec keeps the shell's pid).
	wrapper := filepath.Join(dir, "chiffon-dies")
	script := "#!/bin/sh\ncase \" $* \" in *\" orch-2 \"*) (sleep 8; kill -9 $$) & ;; esac\nexec " + bin + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	type result struct {
		code     int
		out, err string
	}
	done := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := run([]string{"sim", "-orchestrators", "process", "-orchestrator-binary", wrapper, "-data-dir", t.TempDir(),
			"-desktops", "40", "-join-wave", "1", "-duration", "60s", "-time-scale", "6", "-kill", "0", "-churn", "0",
			"-settle-timeout", "60s"}, &out, &errb)
		done <- result{code, out.String(), errb.String()}
	}()
	select {
	case r := <-done:
		if r.code != 1 || !strings.Contains(r.err, "orchestrator process exited") || !strings.Contains(r.err, "orch-2") {
			t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s\nwant exit 1 naming orch-2's exit", r.code, r.err, r.out)
		}
		t.Logf("stdout:\n%s\nstderr:\n%s", r.out, tail(r.err, 5))
		if !strings.Contains(r.out, "wave") {
			t.Logf("(orch-2 died before the waves began: stdout\n%s)", r.out)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the run did not end within 90 s of an orchestrator's death")
	}
}

// TestSim_OrchestratorPortTakenIsStartedAgain: a port the sim picked free
// for an orchestrator is taken before the agent binds it (it happened to
// orch-2 of a 1,000-desktop run: its HTTP port became some process's
// source port); the run starts that orchestrator again on other ports and
// completes, instead of failing.
func TestSim_OrchestratorPortTakenIsStartedAgain(t *testing.T) {
	bin := chiffonBinary(t)
	dir := t.TempDir()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	// orch-2's first start is given the taken port for its HTTP API (the
	// last -http-addr wins): the real agent fails to bind it.
	marker := filepath.Join(dir, "orch-2-started")
	wrapper := filepath.Join(dir, "chiffon-port-taken")
	script := "#!/bin/sh\ncase \" $* \" in *\" orch-2 \"*) if [ ! -e " + marker + " ]; then touch " + marker +
		"; exec " + bin + " \"$@\" -http-addr " + taken.Addr().String() + "; fi ;; esac\nexec " + bin + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"sim", "-orchestrators", "process", "-orchestrator-binary", wrapper, "-data-dir", t.TempDir(),
		"-desktops", "5", "-duration", "4s", "-settle-timeout", "60s", "-kill", "0", "-churn", "0"}, &out, &errb)
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("orch-2 was never started with the taken port: %v", err)
	}
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s\nwant 0: orch-2 started again on other ports", code, errb.String(), out.String())
	}
	if !strings.Contains(out.String(), "orch-2: a port picked for it was taken") || !strings.Contains(out.String(), "3 orchestrators up") {
		t.Errorf("stdout:\n%s\nwant orch-2's taken port said and 3 orchestrators up", out.String())
	}
}
