package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

func newEmptyTLS() *tls.Config { return &tls.Config{} }

func TestAPI_Token(t *testing.T) {
	const token = "s3cret-token"
	_, _, _, base := leaderFixture(t, func(c *Config) { c.Token = token })
	cases := []struct {
		name, path string
		hdr        map[string]string
		code       int
	}{
		{"none", "/agents", nil, 401},
		{"none on unknown path", "/nope", nil, 401},
		{"none on metrics", "/metrics", nil, 401},
		{"none on readyz", "/readyz", nil, 401},
		{"healthz needs none", "/healthz", nil, 200},
		{"wrong bearer", "/agents", map[string]string{"Authorization": "Bearer nope"}, 403},
		{"prefix of token", "/agents", map[string]string{"Authorization": "Bearer s3cret"}, 403},
		{"basic scheme", "/agents", map[string]string{"Authorization": "Basic czNjcmV0"}, 401},
		{"wrong header token", "/agents", map[string]string{apitype.HeaderToken: "nope"}, 403},
		{"bearer", "/agents", map[string]string{"Authorization": "Bearer " + token}, 200},
		{"bearer lower case", "/agents", map[string]string{"Authorization": "bearer " + token}, 200},
		{"header token", "/agents/available-capacity", map[string]string{apitype.HeaderToken: token}, 200},
		{"token then 404", "/nope", map[string]string{apitype.HeaderToken: token}, 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, nil, "GET", base+tc.path, tc.hdr)
			if r.code != tc.code {
				t.Fatalf("%d %s, want %d", r.code, r.body, tc.code)
			}
			if tc.code >= 400 {
				msg := errorBody(t, r)
				if tc.code == 401 && r.header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				if tc.code == 401 && tc.hdr == nil {
					contains(t, msg, "Bearer", apitype.HeaderToken)
				}
			}
		})
	}
}

func TestAPI_TokenForwarded(t *testing.T) {
	const token = "cluster-token"
	ac := makeAPICluster(t, 3, func(_ int, c *Config) { c.Token = token })
	ac.c.WaitForLeader(t, 10*time.Second)
	loadAgents(ac, 10)
	ac.underOneLeader(t, func(leader int) error {
		f := ac.c.Followers(leader)[0]
		r := do(t, nil, "GET", ac.url(f)+"/agents", map[string]string{"Authorization": "Bearer " + token})
		if r.code != 200 {
			t.Fatalf("%d %s", r.code, r.body)
		}
		if err := ac.checkLeader(t, r.header.Get(apitype.HeaderServedBy), leader, "a forwarded read with the token"); err != nil {
			return err
		}
		if r := do(t, nil, "GET", ac.url(f)+"/agents", nil); r.code != 401 {
			t.Fatalf("no token through follower: %d", r.code)
		}
		return nil
	})
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	dir                       string
	caFile, certFile, keyFile string
	clientCert, clientKey     string
	otherCA                   string // an unrelated CA
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	p := testPKI{dir: dir}
	caKey, caCert, caDER := makeCA(t, "chiffon test CA")
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	p.certFile, p.keyFile = issue(t, dir, "server", caCert, caKey, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = issue(t, dir, "client", caCert, caKey, x509.ExtKeyUsageClientAuth)
	_, _, otherDER := makeCA(t, "other CA")
	p.otherCA = writePEM(t, dir, "other.pem", "CERTIFICATE", otherDER)
	return p
}

func makeCA(t *testing.T, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert, der
}

// issue signs a certificate for 127.0.0.1 (both server and client use the
// same name: an orchestrator's certificate serves and forwards).
func issue(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", kb)
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAPI_TLSWithClientCertsAndForwarding(t *testing.T) {
	pki := newTestPKI(t)
	serverTLS, err := ServerTLSConfig(pki.certFile, pki.keyFile, pki.caFile)
	if err != nil {
		t.Fatal(err)
	}
	fwdTLS, err := ForwardTLSConfig(pki.caFile, pki.certFile, pki.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ac := makeAPICluster(t, 3, func(_ int, c *Config) { c.TLS, c.ForwardTLS = serverTLS, fwdTLS })
	ac.c.WaitForLeader(t, 10*time.Second)
	loadAgents(ac, 10)

	clientTLS, err := ForwardTLSConfig(pki.caFile, pki.clientCert, pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	good := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	// A follower forwards over mutual TLS: the answer is the full registry,
	// from the leader (asked again if leadership moves on a busy machine).
	ac.underOneLeader(t, func(leader int) error {
		f := ac.c.Followers(leader)[0]
		r := do(t, good, "GET", "https://"+ac.srv[f].Addr()+"/agents/available-capacity", nil)
		var caps []apitype.Capacity
		if r.code != 200 || json.Unmarshal(r.body, &caps) != nil || len(caps) != 10 {
			t.Fatalf("forwarded over TLS: %d %s", r.code, r.body)
		}
		return ac.checkLeader(t, r.header.Get(apitype.HeaderServedBy), leader, "a read forwarded over TLS")
	})
	f := ac.c.Followers(ac.c.WaitForLeader(t, 10*time.Second))[0]
	base := "https://" + ac.srv[f].Addr()

	noCertTLS, _ := ForwardTLSConfig(pki.caFile, "", "")
	for name, c := range map[string]*http.Client{
		"no client certificate": {Transport: &http.Transport{TLSClientConfig: noCertTLS}},
		"untrusted server":      {Transport: &http.Transport{TLSClientConfig: mustTLS(t, pki.otherCA, pki.clientCert, pki.clientKey)}},
		"plain http":            http.DefaultClient,
	} {
		t.Run(name, func(t *testing.T) {
			u := base
			if name == "plain http" {
				u = "http://" + ac.srv[f].Addr()
			}
			resp, err := c.Get(u + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					t.Fatal("request succeeded")
				}
			}
		})
	}
}

func mustTLS(t *testing.T, ca, cert, key string) *tls.Config {
	t.Helper()
	c, err := ForwardTLSConfig(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAPI_TLSConfigErrors(t *testing.T) {
	pki := newTestPKI(t)
	notPEM := filepath.Join(pki.dir, "junk")
	os.WriteFile(notPEM, []byte("junk"), 0o600)
	if _, err := ServerTLSConfig("", pki.keyFile, ""); err == nil {
		t.Error("no cert accepted")
	}
	if _, err := ServerTLSConfig(pki.certFile, pki.keyFile, notPEM); err == nil {
		t.Error("junk CA accepted")
	}
	if _, err := ServerTLSConfig(pki.certFile, pki.clientKey, ""); err == nil {
		t.Error("mismatched key accepted")
	}
	if _, err := ForwardTLSConfig("", pki.certFile, ""); err == nil {
		t.Error("cert without key accepted")
	}
	// TLS serving alone (no ForwardTLS): forwarding still uses https.
	s, err := New(testConfig(t, consensus.NewFSM(), newLeaderRaft("l"), noAddrs))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg := testConfig(t, consensus.NewFSM(), newLeaderRaft("l"), noAddrs)
	cfg.TLS, _ = ServerTLSConfig(pki.certFile, pki.keyFile, "")
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s.scheme != "http" || s2.scheme != "https" {
		t.Errorf("schemes %s, %s", s.scheme, s2.scheme)
	}
}
