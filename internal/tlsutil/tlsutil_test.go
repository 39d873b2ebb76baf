package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// newCA makes a CA valid for days from now and loads it.
func newCA(t *testing.T, days int) *CA {
	t.Helper()
	certPEM, keyPEM, err := GenerateCA(DefaultDomain, days)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func sign(t *testing.T, ca *CA, req CertRequest) (certPEM, keyPEM []byte) {
	t.Helper()
	c, k, err := ca.Sign(req)
	if err != nil {
		t.Fatalf("sign %+v: %v", req, err)
	}
	return c, k
}

func mustParse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSign_CAVerifiesWhatItSigned: a server certificate from the CA is a
// server certificate for its node, usable as a TLS key pair, and a
// different CA does not vouch for it.
func TestSign_CAVerifiesWhatItSigned(t *testing.T) {
	ca := newCA(t, DefaultCADays)
	certPEM, keyPEM := sign(t, ca, CertRequest{Role: RoleServer, Node: "orch-1",
		IPs: []net.IP{net.ParseIP("10.0.0.5")}, DNSNames: []string{"orch-1.lan"}})
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("the pair is not a TLS key pair: %v", err)
	}
	cert := mustParse(t, certPEM)
	if err := VerifyServer(cert, "orch-1", DefaultDomain, ca.Pool()); err != nil {
		t.Fatalf("VerifyServer on the CA's own server certificate: %v", err)
	}
	if !IsServerCert(cert, DefaultDomain) {
		t.Error("IsServerCert = false for a server certificate")
	}
	for _, host := range []string{"localhost", "127.0.0.1", "10.0.0.5", "orch-1.lan", "orch-1.server.chiffon", "server.chiffon"} {
		if err := cert.VerifyHostname(host); err != nil {
			t.Errorf("server certificate not valid for %s: %v", host, err)
		}
	}
	other := newCA(t, DefaultCADays)
	if err := VerifyServer(cert, "orch-1", DefaultDomain, other.Pool()); err == nil {
		t.Fatal("VerifyServer accepted a certificate from another CA")
	}
}

// TestVerifyServer_RefusesClientAndOtherNode: a desktop's certificate and
// a server certificate for another node are not server certificates for
// node A, though both chain to the CA.
func TestVerifyServer_RefusesClientAndOtherNode(t *testing.T) {
	ca := newCA(t, DefaultCADays)
	clientPEM, _ := sign(t, ca, CertRequest{Role: RoleClient, Node: "orch-a"})
	serverB, _ := sign(t, ca, CertRequest{Role: RoleServer, Node: "orch-b"})
	client := mustParse(t, clientPEM)
	b := mustParse(t, serverB)

	if err := VerifyServer(client, "orch-a", DefaultDomain, ca.Pool()); !errors.Is(err, ErrNotServer) {
		t.Errorf("client certificate for orch-a: VerifyServer = %v, want ErrNotServer", err)
	}
	if IsServerCert(client, DefaultDomain) {
		t.Error("IsServerCert = true for a client certificate")
	}
	if err := client.VerifyHostname("orch-a.client.chiffon"); err != nil {
		t.Errorf("client certificate lacks its own name: %v", err)
	}
	if err := VerifyServer(b, "orch-a", DefaultDomain, ca.Pool()); !errors.Is(err, ErrNotServer) {
		t.Errorf("server certificate for orch-b checked as orch-a: VerifyServer = %v, want ErrNotServer", err)
	}
	if err := VerifyServer(b, "orch-b", "other", ca.Pool()); !errors.Is(err, ErrNotServer) {
		t.Errorf("server certificate for domain chiffon checked for domain other: %v, want ErrNotServer", err)
	}
}

// TestSign_ClientCannotClaimServerNames: the server role's names are the
// CA's to give; a client request that asks for them is refused.
func TestSign_ClientCannotClaimServerNames(t *testing.T) {
	ca := newCA(t, DefaultCADays)
	for _, name := range []string{"server.chiffon", "orch-1.server.chiffon", "ORCH-1.Server.Chiffon.", "x.client.chiffon"} {
		for _, role := range []Role{RoleClient, RoleServer} {
			_, _, err := ca.Sign(CertRequest{Role: role, Node: "desk-1", DNSNames: []string{name}})
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("%s certificate with extra name %q: err = %v, want ErrInvalidRequest", role, name, err)
			}
		}
	}
	for _, node := range []string{"", "a.b", "*", "-x", "a b"} {
		if _, _, err := ca.Sign(CertRequest{Role: RoleServer, Node: node}); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("node %q: err = %v, want ErrInvalidRequest", node, err)
		}
	}
	if _, _, err := ca.Sign(CertRequest{Node: "n"}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("no role: err = %v, want ErrInvalidRequest", err)
	}
}

// TestSign_ExpiryHonoured: a certificate is valid for the days asked, an
// expired one fails VerifyServer, and none may outlive its CA.
func TestSign_ExpiryHonoured(t *testing.T) {
	ca := newCA(t, 30)
	now := time.Now()
	certPEM, _ := sign(t, ca, CertRequest{Role: RoleServer, Node: "orch-1", Days: 2, Now: now})
	cert := mustParse(t, certPEM)
	if want := now.AddDate(0, 0, 2); cert.NotAfter.Sub(want).Abs() > time.Second {
		t.Errorf("NotAfter = %v, want %v", cert.NotAfter, want)
	}
	if err := verifyServer(cert, "orch-1", DefaultDomain, ca.Pool(), now.AddDate(0, 0, 1)); err != nil {
		t.Errorf("valid after 1 of 2 days: %v", err)
	}
	if err := verifyServer(cert, "orch-1", DefaultDomain, ca.Pool(), now.AddDate(0, 0, 3)); err == nil {
		t.Error("VerifyServer accepted a certificate a day after it expired")
	}
	// Issued 10 days ago for 1 day: expired now, through the public API.
	oldPEM, _ := sign(t, ca, CertRequest{Role: RoleServer, Node: "orch-1", Days: 1, Now: now.AddDate(0, 0, -10)})
	if err := VerifyServer(mustParse(t, oldPEM), "orch-1", DefaultDomain, ca.Pool()); err == nil ||
		!strings.Contains(err.Error(), "expired") {
		t.Errorf("expired certificate: VerifyServer = %v, want an expiry error", err)
	}
	if _, _, err := ca.Sign(CertRequest{Role: RoleServer, Node: "orch-1", Days: 31}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("31-day certificate from a 30-day CA: err = %v, want ErrInvalidRequest", err)
	}
	if _, _, err := GenerateCA(DefaultDomain, 0); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("0-day CA: err = %v, want ErrInvalidRequest", err)
	}
}

// TestParseCA_RefusesMismatchedKey: a CA certificate with another CA's
// key is refused rather than signing certificates nobody can verify.
func TestParseCA_RefusesMismatchedKey(t *testing.T) {
	c1, _, err := GenerateCA(DefaultDomain, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, k2, err := GenerateCA(DefaultDomain, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCA(c1, k2); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("ParseCA with a foreign key: %v, want ErrInvalidRequest", err)
	}
	ca := newCA(t, 30)
	leaf, leafKey := sign(t, ca, CertRequest{Role: RoleServer, Node: "n", Days: 1})
	if _, err := ParseCA(leaf, leafKey); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("ParseCA of a leaf certificate: %v, want ErrInvalidRequest", err)
	}
}

// TestWritePair_ModesAndNoOverwrite: the key is 0600 whatever the umask,
// the certificate 0644, and a second write refuses without touching the
// files that are there.
func TestWritePair_ModesAndNoOverwrite(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := CAFileNames(DefaultDomain)
	if certFile != "chiffon-agent-ca.pem" || keyFile != "chiffon-agent-ca-key.pem" {
		t.Fatalf("CA file names %s, %s", certFile, keyFile)
	}
	certFile, keyFile = filepath.Join(dir, certFile), filepath.Join(dir, keyFile)
	if err := WritePair(certFile, []byte("cert"), keyFile, []byte("key")); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]os.FileMode{certFile: 0o644, keyFile: 0o600} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", f, fi.Mode().Perm(), want)
		}
	}
	if err := WritePair(certFile, []byte("new"), keyFile, []byte("new")); !errors.Is(err, ErrExists) {
		t.Fatalf("second WritePair: %v, want ErrExists", err)
	}
	// Only the key there: still refused, and the certificate not written.
	os.Remove(certFile)
	if err := WritePair(certFile, []byte("new"), keyFile, []byte("new")); !errors.Is(err, ErrExists) {
		t.Fatalf("WritePair over a key: %v, want ErrExists", err)
	}
	if _, err := os.Stat(certFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("certificate written although the key was refused: %v", err)
	}
	if b, _ := os.ReadFile(keyFile); string(b) != "key" {
		t.Errorf("key changed to %q", b)
	}
	if err := WriteNew(keyFile, []byte("x"), 0o600); !errors.Is(err, ErrExists) {
		t.Errorf("WriteNew over a file: %v, want ErrExists", err)
	}
	c, k := CertFileNames(RoleServer, "orch-1", DefaultDomain)
	if got := []string{c, k}; !slices.Equal(got, []string{"chiffon-server-orch-1.pem", "chiffon-server-orch-1-key.pem"}) {
		t.Errorf("server file names %q", got)
	}
}
