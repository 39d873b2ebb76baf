package main

import (
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/gossip"
)

// TestProcess_OrchestratorRefusesWithoutKeyAndTLS: secure by default. An
// orchestrator without a gossip key or without TLS material exits 2 and
// says, on stderr, the two commands that make them and the flags to pass;
// a keyring already in the data dir counts as the key.
func TestProcess_OrchestratorRefusesWithoutKeyAndTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	t.Parallel()
	tlsArgs := pki(t).serverArgs(t, "lone")
	keyringDir := t.TempDir()
	if err := os.MkdirAll(filepath.Dir(gossip.KeyringFile(keyringDir)), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gossip.KeyringFile(keyringDir), []byte(`["`+testGossipKey+`"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		secure  []string
		dataDir string
		refused bool
		want    []string // in stderr when refused
	}{
		{name: "nothing", refused: true, want: []string{"no -encrypt key", "no TLS certificate",
			"chiffon keygen > gossip.key", "chiffon tls ca create && chiffon tls cert create -server -node lone",
			`-encrypt "$(cat gossip.key)" -tls-ca chiffon-agent-ca.pem -tls-cert chiffon-server-lone.pem -tls-key chiffon-server-lone-key.pem`,
			"-insecure"}},
		{name: "TLS but no key", secure: tlsArgs, refused: true, want: []string{"no -encrypt key", "chiffon keygen"}},
		{name: "key but no TLS", secure: []string{"-encrypt", testGossipKey}, refused: true, want: []string{"no TLS certificate", "chiffon tls ca create"}},
		{name: "certificate but no CA", secure: []string{"-encrypt", testGossipKey, "-tls-cert", tlsArgs[3], "-tls-key", tlsArgs[5]},
			refused: true, want: []string{"no cluster CA (-tls-ca)"}},
		{name: "keyring in the data dir and TLS", secure: tlsArgs, dataDir: keyringDir},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newOrchSpec(t, "lone", "127.0.4.1", 1, "")
			s.secure = c.secure
			if c.dataDir != "" {
				s.dataDir = c.dataDir
			}
			p := s.start(t)
			if !c.refused {
				p.waitReady(t)
				if log := p.logText(); strings.Contains(log, "running without protection") {
					t.Errorf("a secured orchestrator warns:\n%s", tail(log, 20))
				}
				return
			}
			if code := p.waitExit(t, 15*time.Second); code != 2 {
				t.Fatalf("exit code %d; want 2:\n%s", code, tail(p.logText(), 20))
			}
			log := p.logText()
			for _, w := range c.want {
				if !strings.Contains(log, w) {
					t.Errorf("stderr does not say %q:\n%s", w, log)
				}
			}
		})
	}
}

// TestProcess_InsecureOrchestratorWarnsAndServes: with -insecure (or
// CHIFFON_INSECURE) an orchestrator without key and TLS starts, serves
// plain HTTP, and warns at every start, naming what is unprotected.
func TestProcess_InsecureOrchestratorWarnsAndServes(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	t.Parallel()
	s := newOrchSpec(t, "open", "127.0.4.2", 1, "")
	s.secure = []string{"-insecure"}
	for i, how := range []string{"flag", "env"} {
		if how == "env" {
			s.secure, s.env = nil, []string{"CHIFFON_INSECURE=true"}
		}
		p := s.start(t)
		p.waitReady(t)
		log := p.logText()
		for _, w := range []string{`msg="running without protection" insecure=true`, "gossip is not encrypted", "the HTTP API is plain HTTP"} {
			if !strings.Contains(log, w) {
				t.Errorf("start %d (%s): the log does not say %q:\n%s", i+1, how, w, tail(log, 20))
			}
		}
		waitFor(t, 30*time.Second, "plain HTTP /v1/status/leader", func() (bool, string) {
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + s.httpAddr + "/v1/status/leader")
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, resp.Status
		})
		p.signal(t, os.Interrupt)
		if code := p.waitExit(t, 15*time.Second); code != 0 {
			t.Fatalf("exit %d after SIGINT", code)
		}
	}
}

// TestProcess_SecuredOrchestratorRefusesPlainHTTPAndRPCKeyList: the
// default the helpers start (gossip key, TLS) is secured where a user
// would try: plain HTTP gets no answer, and the stock `serf keys -list`
// without the RPC token prints no key.
func TestProcess_SecuredOrchestratorRefusesPlainHTTPAndRPCKeyList(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	t.Parallel()
	serf := serfBinary(t)
	s := newOrchSpec(t, "sealed", "127.0.4.3", 1, "")
	s.args = append(s.args, fastTimings...)
	p := s.start(t)
	p.waitReady(t)
	waitFor(t, 30*time.Second, "a leader over HTTPS", func() (bool, string) {
		l := leaderOf(s.httpAddr)
		return l != "", l
	})
	if log := p.logText(); !strings.Contains(log, "encrypted=true") || strings.Contains(log, "running without protection") {
		t.Errorf("the secured orchestrator's log:\n%s", tail(log, 20))
	}
	checkPlainHTTPRefused(t, s.httpAddr)
	// /metrics says how long the certificates have (the test CA: 60 days,
	// the node's: 30).
	resp, err := pki(t).httpClient(t, "metrics").Get("https://" + s.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for cert, days := range map[string]float64{"node": 30, "ca": 60} {
		m := regexp.MustCompile(`(?m)^chiffon_tls_cert_expiry_seconds\{cert="` + cert + `"\} (\S+)$`).FindSubmatch(body)
		if m == nil {
			t.Errorf("/metrics has no expiry for cert=%q", cert)
			continue
		}
		if v, err := strconv.ParseFloat(string(m[1]), 64); err != nil || math.Abs(v/86400-days) > 1 {
			t.Errorf("cert=%q expires in %s s; want about %v days", cert, m[1], days)
		}
	}
	out, errOut, err := runCmd(serf, "keys", "-list", "-rpc-addr", s.rpcAddr)
	if err == nil || strings.Contains(out+errOut, testGossipKey) {
		t.Errorf("serf keys -list without the RPC token: err %v, printed the key %t:\n%s%s", err, strings.Contains(out+errOut, testGossipKey), out, errOut)
	}
	out, errOut, err = runCmd(serf, append([]string{"keys", "-list"}, s.rpcArgs()...)...)
	if err != nil || !strings.Contains(out, testGossipKey) {
		t.Errorf("serf keys -list with the RPC token: %v\n%s%s", err, out, errOut)
	}
}

// checkPlainHTTPRefused fails unless a plain-HTTP GET to addr is refused:
// Go's TLS server answers a plain request with 400 and says HTTPS is
// needed, never with the API's data.
func checkPlainHTTPRefused(t *testing.T, addr string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/v1/agents")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("plain HTTP to %s: %s; want it refused", addr, resp.Status)
	}
}
