package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chiffon-dev/chiffon/api"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// runChiffon runs one chiffon command line in-process.
func runChiffon(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestTLSCommands_MutualTLSWithTheirFiles makes a CA, a server certificate
// for orch-1 and a client certificate for desk-1 with the CLI, then serves
// HTTPS with what the agent's -tls-cert/-tls-key/-tls-ca would load and
// connects with the desktop's certificate: mutual TLS on loopback. The
// client then checks that its peer is the server orch-1, and not orch-2.
func TestTLSCommands_MutualTLSWithTheirFiles(t *testing.T) {
	for _, e := range []string{"CHIFFON_DAYS", "CHIFFON_DOMAIN", "CHIFFON_CA", "CHIFFON_KEY", "CHIFFON_NODE", "CHIFFON_OUT_DIR",
		"CHIFFON_SERVER", "CHIFFON_CLIENT", "CHIFFON_ADDITIONAL_IPADDRESS", "CHIFFON_ADDITIONAL_DNSNAME", "CHIFFON_CONFIG_FILE"} {
		t.Setenv(e, "")
		os.Unsetenv(e)
	}
	dir := t.TempDir()
	if code, _, errOut := runChiffon(t, "tls", "ca", "create", "-out-dir", dir); code != 0 {
		t.Fatalf("tls ca create: exit %d: %s", code, errOut)
	}
	caFile := filepath.Join(dir, "chiffon-agent-ca.pem")
	// Flags with two dashes and after others, as for every command.
	if code, out, errOut := runChiffon(t, "tls", "cert", "create", "--node", "orch-1", "-out-dir", dir, "--server"); code != 0 ||
		!strings.Contains(out, "chiffon-server-orch-1-key.pem") {
		t.Fatalf("tls cert create -server: exit %d: %s %s", code, out, errOut)
	}
	if code, _, errOut := runChiffon(t, "tls", "cert", "create", "-client", "-node", "desk-1", "-out-dir", dir); code != 0 {
		t.Fatalf("tls cert create -client: exit %d: %s", code, errOut)
	}
	for _, key := range []string{"chiffon-agent-ca-key.pem", "chiffon-server-orch-1-key.pem", "chiffon-client-desk-1-key.pem"} {
		fi, err := os.Stat(filepath.Join(dir, key))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", key, fi.Mode().Perm())
		}
	}

	// The orchestrator's side: exactly what `chiffon agent -tls-cert
	// -tls-key -tls-ca` loads, requiring client certificates.
	serverTLS, err := api.ServerTLSConfig(filepath.Join(dir, "chiffon-server-orch-1.pem"),
		filepath.Join(dir, "chiffon-server-orch-1-key.pem"), caFile)
	if err != nil {
		t.Fatalf("ServerTLSConfig with the CLI's files: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = serverTLS
	srv.StartTLS()
	t.Cleanup(srv.Close)

	// The desktop's side, as a forwarding node or the CLI loads it.
	clientTLS, err := api.ForwardTLSConfig(caFile, filepath.Join(dir, "chiffon-client-desk-1.pem"),
		filepath.Join(dir, "chiffon-client-desk-1-key.pem"))
	if err != nil {
		t.Fatalf("ForwardTLSConfig with the CLI's files: %v", err)
	}
	tr := &http.Transport{TLSClientConfig: clientTLS}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatalf("mutual TLS GET %s: %v", srv.URL, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "desk-1.client.chiffon" {
		t.Errorf("the server saw client %q, want desk-1.client.chiffon", body)
	}
	ca, err := tlsutil.LoadCA(caFile, filepath.Join(dir, "chiffon-agent-ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	peer := resp.TLS.PeerCertificates[0]
	if err := tlsutil.VerifyServer(peer, "orch-1", tlsutil.DefaultDomain, ca.Pool()); err != nil {
		t.Errorf("the peer is not verified as server orch-1: %v", err)
	}
	if err := tlsutil.VerifyServer(peer, "orch-2", tlsutil.DefaultDomain, ca.Pool()); !errors.Is(err, tlsutil.ErrNotServer) {
		t.Errorf("orch-1's certificate passed for orch-2: %v", err)
	}

	// Without a client certificate the server refuses the connection.
	anon, err := api.ForwardTLSConfig(caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	anonTr := &http.Transport{TLSClientConfig: anon}
	t.Cleanup(anonTr.CloseIdleConnections)
	if resp, err := (&http.Client{Transport: anonTr}).Get(srv.URL); err == nil {
		resp.Body.Close()
		t.Fatalf("GET without a client certificate: %s, want a refused handshake", resp.Status)
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET without a client certificate failed for another reason: %v", err)
	}

	// The CA is never overwritten.
	code, _, errOut := runChiffon(t, "tls", "ca", "create", "-out-dir", dir)
	if code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("second tls ca create: exit %d, %q; want 1 and 'already exists'", code, errOut)
	}
	if _, err := tlsutil.LoadCA(caFile, filepath.Join(dir, "chiffon-agent-ca-key.pem")); err != nil {
		t.Errorf("the CA no longer loads after the refused overwrite: %v", err)
	}
}

// TestTLSCommands_BadUsage: bad flags and combinations exit 2 and name
// what is allowed; a missing CA exits 1 and says how to make one.
func TestTLSCommands_BadUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tls", "ca", "create", "-nope"}, 2, "allowed flags: -days, -domain, -out-dir"},
		{[]string{"tls", "ca", "create", "-days", "0"}, 2, "-days"},
		{[]string{"tls", "cert", "create", "-node", "n", "-out-dir", dir}, 2, "-server"},
		{[]string{"tls", "cert", "create", "-server", "-client", "-node", "n", "-out-dir", dir}, 2, "exactly one"},
		{[]string{"tls", "cert", "create", "-server", "-out-dir", dir}, 2, "-node"},
		{[]string{"tls", "cert", "create", "-server", "-node", "n", "-additional-ipaddress", "nope", "-out-dir", dir}, 2, "nope"},
		{[]string{"tls", "cert", "create", "-server", "-node", "n", "-out-dir", dir}, 1, "chiffon tls ca create"},
	} {
		code, _, errOut := runChiffon(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}
