package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSleepHook_RunsPowerCommands runs scripts/systemd/chiffon-sleep as
// systemd-sleep does (pre, then post) with a stand-in chiffon that
// records its arguments, and scripts/install.sh --role desktop staged
// under DESTDIR, which must install the hook where systemd-sleep looks.
func TestSleepHook_RunsPowerCommands(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	stub := filepath.Join(dir, "chiffon")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n[ \"$1\" = version ] && { echo chiffon test; exit 0; }\necho \"$@\" >> '"+calls+"'\necho ok\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	hook, err := filepath.Abs("../../scripts/systemd/chiffon-sleep")
	if err != nil {
		t.Fatal(err)
	}
	env := childEnv("CHIFFON="+stub, "CHIFFON_RPC_ADDR=127.0.0.1:7999", "CHIFFON_DATA_DIR=/data",
		"CHIFFON_SLEEP_ADDR_FILE="+filepath.Join(dir, "addr"))
	for _, phase := range []string{"pre", "post"} {
		cmd := exec.Command(hook, phase, "suspend")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("hook %s: %v\n%s", phase, err, out)
		}
	}
	b, _ := os.ReadFile(calls)
	want := "power suspend -rpc-addr 127.0.0.1:7999 -data-dir /data\npower resume -rpc-addr 127.0.0.1:7999 -data-dir /data\n"
	if string(b) != want {
		t.Fatalf("the hook ran:\n%s\nwant:\n%s", b, want)
	}

	stage := t.TempDir()
	cmd := exec.Command("bash", "scripts/install.sh", "--role", "desktop", "--bin", stub)
	cmd.Dir = "../.."
	cmd.Env = childEnv("DESTDIR=" + stage)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	installed, err := os.ReadFile(filepath.Join(stage, "usr/lib/systemd/system-sleep/chiffon"))
	if err != nil {
		t.Fatalf("install.sh did not install the sleep hook: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(stage, "usr/lib/systemd/system-sleep/chiffon")); fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("installed hook is not executable: %v", fi.Mode())
	}
	// PREFIX is /usr/local, the hook's own default: installed as it is.
	if src, _ := os.ReadFile(hook); string(installed) != string(src) {
		t.Errorf("installed hook differs from scripts/systemd/chiffon-sleep:\n%s", installed)
	}
}
