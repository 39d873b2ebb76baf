package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOptions_PrecedenceFlagEnvFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(file, []byte(`{"heartbeat_interval": "10s", "node": "from-file", "retry-join": ["a:1", "b:2"], "retry_max": 3}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHIFFON_HEARTBEAT_INTERVAL", "20s")
	t.Setenv("CHIFFON_RETRY_JOIN", "c:3,d:4")
	var s agentSettings
	o := s.options()
	if _, err := o.parse("agent", []string{"--config-file=" + file, "-heartbeat-interval", "40s", "-join=x:1", "--join", "y:2"}); err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if c.HeartbeatInterval != 40*time.Second {
		t.Errorf("heartbeat = %s, want the flag's 40s", c.HeartbeatInterval)
	}
	if c.NodeName != "from-file" || c.Gossip.RetryMax != 3 {
		t.Errorf("file values lost: node=%q retry-max=%d", c.NodeName, c.Gossip.RetryMax)
	}
	if !slices.Equal(c.Gossip.RetryJoin, []string{"c:3", "d:4"}) {
		t.Errorf("retry-join = %v, want the env's list replacing the file's", c.Gossip.RetryJoin)
	}
	if !slices.Equal(c.Gossip.Join, []string{"x:1", "y:2"}) {
		t.Errorf("join = %v", c.Gossip.Join)
	}
}

func TestOptions_EnvOverridesFileWithoutFlag(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(file, []byte(`{"heartbeat_interval": "10s"}`), 0o600)
	t.Setenv("CHIFFON_CONFIG_FILE", file)
	t.Setenv("CHIFFON_HEARTBEAT_INTERVAL", "20s")
	var s agentSettings
	if _, err := s.options().parse("agent", nil); err != nil {
		t.Fatal(err)
	}
	if s.cfg.HeartbeatInterval != 20*time.Second {
		t.Fatalf("heartbeat = %s, want env's 20s", s.cfg.HeartbeatInterval)
	}
}

// The desktop's VRAM policy comes from a flag, CHIFFON_* or the config
// file (a JSON number), like every other setting.
func TestOptions_VRAMPolicy(t *testing.T) {
	var s agentSettings
	if _, err := s.options().parse("agent", nil); err != nil {
		t.Fatal(err)
	}
	if v := s.cfg.VRAM; v.HeadroomGB != 0 || v.PushDeltaGB != 1 {
		t.Fatalf("defaults %+v, want no headroom and a 1 GB push delta", v)
	}
	file := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(file, []byte(`{"owner_vram_headroom_gb": 1.5, "push_vram_delta_gb": 4}`), 0o600)
	t.Setenv("CHIFFON_PUSH_VRAM_DELTA_GB", "0.5")
	s = agentSettings{}
	if _, err := s.options().parse("agent", []string{"-config-file", file}); err != nil {
		t.Fatal(err)
	}
	if v := s.cfg.VRAM; v.HeadroomGB != 1.5 || v.PushDeltaGB != 0.5 {
		t.Fatalf("got %+v, want the file's 1.5 GB headroom and the env's 0.5 GB delta", v)
	}
}

func TestOptions_BadValuesNameTheirSource(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.json")
	os.WriteFile(unknown, []byte(`{"hartbeat": "1s"}`), 0o600)
	notJSON := filepath.Join(dir, "bad.json")
	os.WriteFile(notJSON, []byte(`heartbeat = 1s`), 0o600)
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"negative duration", []string{"-heartbeat-interval=-1s"}, nil, "-heartbeat-interval"},
		{"not a duration", []string{"-retry-interval", "soon"}, nil, "-retry-interval"},
		{"bad int", []string{"-retry-max", "x"}, nil, "-retry-max"},
		{"bad GB", []string{"-owner-vram-headroom-gb", "lots"}, nil, "-owner-vram-headroom-gb"},
		{"negative GB", nil, map[string]string{"CHIFFON_PUSH_VRAM_DELTA_GB": "-1"}, "CHIFFON_PUSH_VRAM_DELTA_GB"},
		{"bad env", nil, map[string]string{"CHIFFON_HEARTBEAT_INTERVAL": "often"}, "CHIFFON_HEARTBEAT_INTERVAL"},
		{"unknown file key", []string{"-config-file", unknown}, nil, `unknown key "hartbeat"`},
		{"file not json", []string{"-config-file", notJSON}, nil, "not a JSON object"},
		{"missing file", []string{"-config-file", filepath.Join(dir, "nope.json")}, nil, "-config-file"},
		{"unknown flag", []string{"-nope"}, nil, "-nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var s agentSettings
			_, err := s.options().parse("agent", tc.args)
			if !errors.Is(err, errUsage) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestAgentSettings_ValidateNamesFlag(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"unknown role":      {[]string{"-role", "desktop,gpu"}, `-role: unknown role "gpu"`},
		"bad key":           {[]string{"-encrypt", "c2hvcnQ="}, "-encrypt"},
		"zero beat":         {[]string{"-heartbeat-interval", "0s"}, "-heartbeat-interval"},
		"no port":           {[]string{"-bind", "127.0.0.1"}, "-bind"},
		"bad rpc port":      {[]string{"-rpc-addr", "127.0.0.1:99999"}, "-rpc-addr"},
		"handler mode":      {[]string{"-work-handler", "cat", "-work-handler-mode", "daemon"}, `-work-handler-mode: "daemon"; want exec or persistent`},
		"no retention":      {[]string{"-work-retention", "0s"}, "-work-retention: 0s; must be a positive duration"},
		"no lease":          {[]string{"-work-lease", "0s"}, "-work-lease: 0s; must be a positive duration"},
		"never unreachable": {[]string{"-work-unreachable-after", "0s"}, "-work-unreachable-after: 0s; must be a positive duration"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var s agentSettings
			if _, err := s.options().parse("agent", tc.args); err != nil {
				t.Fatal(err)
			}
			s.cfg.Roles = s.roles
			err := s.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestOptions_VoterRoleGrace: the grace has its documented default and
// CHIFFON_VOTER_ROLE_GRACE sets it like any other option.
func TestOptions_VoterRoleGrace(t *testing.T) {
	var s agentSettings
	if _, err := s.options().parse("agent", nil); err != nil {
		t.Fatal(err)
	}
	if got := s.cfg.Orchestrator.Liveness.VoterRoleGrace; got != time.Minute {
		t.Fatalf("default -voter-role-grace = %s, want 1m", got)
	}
	t.Setenv("CHIFFON_VOTER_ROLE_GRACE", "45s")
	s = agentSettings{}
	if _, err := s.options().parse("agent", nil); err != nil {
		t.Fatal(err)
	}
	if got := s.cfg.Orchestrator.Liveness.VoterRoleGrace; got != 45*time.Second {
		t.Fatalf("-voter-role-grace from env = %s, want 45s", got)
	}
}

// TestOptions_WorkFenceSettings: -work-lease and -work-unreachable-after
// come from flags, CHIFFON_* and the config file like every option, with
// the documented defaults.
func TestOptions_WorkFenceSettings(t *testing.T) {
	var def agentSettings
	if _, err := def.options().parse("agent", nil); err != nil {
		t.Fatal(err)
	}
	if b := def.cfg.Work.Bridge; b.Lease != 10*time.Second || b.UnreachableAfter != 30*time.Second {
		t.Fatalf("defaults: lease %s, unreachable after %s; want 10s, 30s", b.Lease, b.UnreachableAfter)
	}
	file := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(file, []byte(`{"work-lease": "4s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHIFFON_WORK_UNREACHABLE_AFTER", "12s")
	var s agentSettings
	if _, err := s.options().parse("agent", []string{"-config-file", file}); err != nil {
		t.Fatal(err)
	}
	if b := s.cfg.Work.Bridge; b.Lease != 4*time.Second || b.UnreachableAfter != 12*time.Second {
		t.Fatalf("lease %s (file), unreachable after %s (env); want 4s, 12s", b.Lease, b.UnreachableAfter)
	}
}

// TestOptions_TrimStartupPages: -trim-startup-pages defaults to 10s, and
// 0 (here from CHIFFON_TRIM_STARTUP_PAGES) keeps the start-up pages.
func TestOptions_TrimStartupPages(t *testing.T) {
	var def agentSettings
	if _, err := def.options().parse("agent", nil); err != nil {
		t.Fatal(err)
	}
	if def.trimAfter != 10*time.Second {
		t.Fatalf("default -trim-startup-pages = %s, want 10s", def.trimAfter)
	}
	t.Setenv("CHIFFON_TRIM_STARTUP_PAGES", "0")
	var s agentSettings
	if _, err := s.options().parse("agent", nil); err != nil {
		t.Fatal(err)
	}
	if s.trimAfter != 0 {
		t.Fatalf("-trim-startup-pages from env = %s, want 0", s.trimAfter)
	}
}
