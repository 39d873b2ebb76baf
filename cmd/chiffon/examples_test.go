package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSystemdExamples_AreValidConfigs loads the example config files that
// scripts/install.sh installs, as `chiffon agent -config-file` would, once
// their placeholders are filled in, and checks that the placeholders
// themselves are refused (an unedited gossip key must not start a node).
func TestSystemdExamples_AreValidConfigs(t *testing.T) {
	clearDevEnv(t)
	for _, role := range []string{"desktop", "orchestrator"} {
		t.Run(role, func(t *testing.T) {
			raw, err := os.ReadFile("../../scripts/systemd/" + role + ".example.json")
			if err != nil {
				t.Fatal(err)
			}
			filled := strings.NewReplacer("REPLACE-WITH-THE-CLUSTER-KEY-FROM-chiffon-keygen", "wMKko/rgU15VuJSSY6wfvvE40hLBPr6Ed9tBA666dgc=",
				"REPLACE-WITH-THE-CLUSTER-API-TOKEN", "token").Replace(string(raw))
			for _, c := range []struct {
				body  string
				valid bool
			}{{filled, true}, {string(raw), false}} {
				path := filepath.Join(t.TempDir(), "chiffon.json")
				if err := os.WriteFile(path, []byte(c.body), 0o600); err != nil {
					t.Fatal(err)
				}
				var s agentSettings
				if _, err := s.options().parse("agent", []string{"-config-file", path}); err != nil {
					t.Fatalf("parse: %v", err)
				}
				s.cfg.Roles = s.roles
				err := s.cfg.Validate()
				if (err == nil) != c.valid {
					t.Errorf("valid=%t: Validate() = %v", c.valid, err)
				}
				if c.valid && (!slices.Equal(s.roles, []string{role}) || s.cfg.DataDir != "/var/lib/chiffon" || len(s.cfg.Gossip.RetryJoin) != 3) {
					t.Errorf("settings: roles %v, data dir %q, retry-join %v", s.roles, s.cfg.DataDir, s.cfg.Gossip.RetryJoin)
				}
			}
		})
	}
}
