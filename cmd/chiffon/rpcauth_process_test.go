package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/gossip"
)

// TestProcess_SerfRPCRequiresToken runs one node with a gossip key and no
// -rpc-auth, as a desktop would be started, and tries its serf RPC as
// another local user would with the stock serf CLI: without the token from
// the node's data dir nothing is read or changed; with it everything works,
// and `chiffon members` finds it through -data-dir alone.
func TestProcess_SerfRPCRequiresToken(t *testing.T) {
	serf := serfBinary(t)
	bin := chiffonBinary(t)
	out, errOut, err := runCmd(bin, "keygen")
	if err != nil {
		t.Fatalf("chiffon keygen: %v: %s", err, errOut)
	}
	gossipKey := strings.TrimSpace(out)
	n := newNodeSpec(t, "desk", "127.0.0.1").withMetrics(t, metricsJSON(t, 0.1, 4, 8, "none"))
	n.args = append([]string{"-encrypt", gossipKey}, fastTimings...)
	p := n.start(t)
	p.waitReady(t)

	// The token was generated into the data dir, readable by its owner only,
	// and the log says where it is but never what it is.
	path := gossip.RPCAuthPath(n.dataDir)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("no token file after the first start: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, st.Mode().Perm())
	}
	token, err := gossip.ReadRPCAuthKey(n.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if log := p.logText(); !strings.Contains(log, path) || strings.Contains(log, token) {
		t.Errorf("the log should name %s and not hold the token:\n%s", path, tail(log, 40))
	}

	// Without the token: `serf keys -list` is refused and prints no key.
	out, errOut, err = runCmd(serf, "keys", "-list", "-rpc-addr", n.rpcAddr)
	if err == nil {
		t.Errorf("serf keys -list without -rpc-auth succeeded:\n%s", out)
	}
	if strings.Contains(out+errOut, gossipKey) {
		t.Errorf("serf keys -list without -rpc-auth printed the gossip key:\n%s%s", out, errOut)
	}
	// A wrong token fares no better.
	out, errOut, err = runCmd(serf, "keys", "-list", "-rpc-addr", n.rpcAddr, "-rpc-auth", "guess")
	if err == nil || strings.Contains(out+errOut, gossipKey) {
		t.Errorf("serf keys -list with a wrong token: err %v, output:\n%s%s", err, out, errOut)
	}
	// Without the token: `serf tags -set` is refused and changes nothing.
	if out, errOut, err := runCmd(serf, "tags", "-rpc-addr", n.rpcAddr, "-set", "role=orchestrator", "-set", "x=y"); err == nil {
		t.Errorf("serf tags -set without -rpc-auth succeeded: %s%s", out, errOut)
	}

	// With the token from the data dir: the key is listed, the tags are as
	// they were, and tags can be set.
	out, errOut, err = runCmd(serf, "keys", "-list", "-rpc-addr", n.rpcAddr, "-rpc-auth", token)
	if err != nil || !strings.Contains(out, gossipKey) {
		t.Errorf("serf keys -list -rpc-auth TOKEN: %v: %s%s; want the gossip key listed", err, out, errOut)
	}
	m, err := serfMembers(serf, n)
	if err != nil {
		t.Fatal(err)
	}
	if tags := m[n.name].Tags; tags["x"] != "" || tags["role"] == "orchestrator" {
		t.Errorf("the refused serf tags -set changed tags: %v", tags)
	}
	if out, errOut, err := serfCmd(serf, n, "tags", "-set", "x=y"); err != nil {
		t.Errorf("serf tags -set -rpc-auth TOKEN: %v: %s%s", err, out, errOut)
	}

	// chiffon members: -data-dir is enough; CHIFFON_RPC_AUTH and -rpc-auth
	// work too; a wrong or missing token is refused with how to give it.
	chiffon := func(env []string, args ...string) (string, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"members", "-rpc-addr", n.rpcAddr}, args...)...)
		cmd.Env = childEnv(env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	emptyHome := t.TempDir() // so that the default -data-dir (~/.chiffon) holds no token
	for name, tc := range map[string]struct {
		env  []string
		args []string
		ok   bool
	}{
		"data dir":       {[]string{"HOME=" + emptyHome}, []string{"-data-dir", n.dataDir}, true},
		"env":            {[]string{"HOME=" + emptyHome, "CHIFFON_RPC_AUTH=" + token}, nil, true},
		"flag":           {[]string{"HOME=" + emptyHome}, []string{"-rpc-auth", token, "-data-dir", emptyHome}, true},
		"no token":       {[]string{"HOME=" + emptyHome}, nil, false},
		"wrong token":    {[]string{"HOME=" + emptyHome}, []string{"-rpc-auth", "guess", "-data-dir", n.dataDir}, false},
		"wrong data dir": {[]string{"HOME=" + emptyHome}, []string{"-data-dir", emptyHome}, false},
	} {
		out, errOut, err := chiffon(tc.env, tc.args...)
		switch {
		case tc.ok && (err != nil || !strings.Contains(out, n.name)):
			t.Errorf("%s: chiffon members %v: %v: %s%s", name, tc.args, err, out, errOut)
		case !tc.ok && err == nil:
			t.Errorf("%s: chiffon members %v succeeded without the right token:\n%s", name, tc.args, out)
		case !tc.ok && !strings.Contains(errOut, "-rpc-auth") || !tc.ok && !strings.Contains(errOut, "-data-dir"):
			t.Errorf("%s: chiffon members %v: the error does not say how to give the token: %s", name, tc.args, errOut)
		}
	}
}
