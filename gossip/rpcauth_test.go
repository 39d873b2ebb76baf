package gossip

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/serf/client"
)

func TestLoadOrCreateRPCAuthKey_CreatesPrivateFileOnce(t *testing.T) {
	dir := t.TempDir()
	key, created, err := LoadOrCreateRPCAuthKey(dir)
	if err != nil || !created {
		t.Fatalf("first load: key %q created %v err %v, want a new key", key, created, err)
	}
	if len(key) != 64 || strings.Trim(key, "0123456789abcdef") != "" {
		t.Errorf("key %q is not 32 bytes of hex", key)
	}
	path := RPCAuthPath(dir)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, st.Mode().Perm())
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("serf dir: %v, err %v; want mode 0700", st.Mode().Perm(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "rpc-auth.tmp*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	again, created, err := LoadOrCreateRPCAuthKey(dir)
	if err != nil || created || again != key {
		t.Errorf("second load: key %q created %v err %v, want the first key, not created", again, created, err)
	}
	other, _, err := LoadOrCreateRPCAuthKey(t.TempDir())
	if err != nil || other == key {
		t.Errorf("another data dir got key %q (err %v), want a different one", other, err)
	}
}

func TestReadRPCAuthKey_Refusals(t *testing.T) {
	for name, tc := range map[string]struct {
		mode    os.FileMode
		content string
		want    error
	}{
		"group readable": {0o640, "secret\n", ErrRPCAuthPerm},
		"world readable": {0o644, "secret\n", ErrRPCAuthPerm},
		"group writable": {0o620, "secret\n", ErrRPCAuthPerm},
		"empty":          {0o600, " \n", ErrRPCAuthEmpty},
		"absent":         {0, "", fs.ErrNotExist},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := RPCAuthPath(dir)
			if tc.mode != 0 {
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.mode); err != nil { // past the umask
					t.Fatal(err)
				}
			}
			key, err := ReadRPCAuthKey(dir)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ReadRPCAuthKey = %q, %v; want %v", key, err, tc.want)
			}
			if tc.want == ErrRPCAuthPerm && !strings.Contains(err.Error(), "chmod 600 "+path) {
				t.Errorf("error %q does not say how to fix it", err)
			}
			// The node refuses to start on it too, and does not replace it.
			if tc.mode != 0 {
				if _, _, err := LoadOrCreateRPCAuthKey(dir); !errors.Is(err, tc.want) {
					t.Errorf("LoadOrCreateRPCAuthKey: %v, want %v", err, tc.want)
				}
				if b, _ := os.ReadFile(path); string(b) != tc.content {
					t.Errorf("file rewritten to %q", b)
				}
			}
		})
	}
}

func TestReadRPCAuthKey_TrimsNewline(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Dir(RPCAuthPath(dir)), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(RPCAuthPath(dir), []byte("my-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if key, err := ReadRPCAuthKey(dir); err != nil || key != "my-token" {
		t.Errorf("ReadRPCAuthKey = %q, %v; want my-token", key, err)
	}
}

func TestGossip_RPCRequiresDataDirToken(t *testing.T) {
	c := fastConfig(t, "solo")
	g := start(t, c)
	if g.RPCAuthFile() != RPCAuthPath(c.DataDir) {
		t.Errorf("RPCAuthFile = %q, want %q", g.RPCAuthFile(), RPCAuthPath(c.DataDir))
	}
	key, err := ReadRPCAuthKey(c.DataDir)
	if err != nil {
		t.Fatal(err)
	}

	// No token: the handshake passes but every command is refused.
	rc, err := client.ClientFromConfig(&client.Config{Addr: g.RPCAddr(), Timeout: 2 * time.Second})
	if err == nil {
		_, _, _, err = rc.ListKeys()
		rc.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "Authentication required") {
		t.Errorf("list keys without a token: %v, want Authentication required", err)
	}
	// A wrong token is refused at once.
	if rc, err := client.ClientFromConfig(&client.Config{Addr: g.RPCAddr(), AuthKey: "wrong", Timeout: 2 * time.Second}); err == nil {
		rc.Close()
		t.Error("a wrong token was accepted")
	}
	// The file's token works.
	rc, err = client.ClientFromConfig(&client.Config{Addr: g.RPCAddr(), AuthKey: key, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if m, err := rc.Members(); err != nil || len(m) != 1 {
		t.Errorf("members with the token: %v, %v", m, err)
	}
}

func TestGossip_RPCAuthKeyOverridesDataDir(t *testing.T) {
	c := fastConfig(t, "solo")
	c.RPCAuthKey = "given"
	g := start(t, c)
	if _, err := os.Stat(RPCAuthPath(c.DataDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: %v; want no file when the token is given", RPCAuthPath(c.DataDir), err)
	}
	if g.RPCAuthFile() != "" {
		t.Errorf("RPCAuthFile = %q, want empty", g.RPCAuthFile())
	}
	rc, err := client.ClientFromConfig(&client.Config{Addr: g.RPCAddr(), AuthKey: "given", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := rc.Members(); err != nil {
		t.Errorf("members with the given token: %v", err)
	}
}

func TestGossip_RefusesLooseRPCAuthFile(t *testing.T) {
	c := fastConfig(t, "solo")
	path := RPCAuthPath(c.DataDir)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Start(t.Context()); !errors.Is(err, ErrRPCAuthPerm) {
		t.Fatalf("Start = %v, want %v", err, ErrRPCAuthPerm)
	}
}
