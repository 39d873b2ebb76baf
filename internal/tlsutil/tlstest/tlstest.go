// Package tlstest makes a cluster CA for a test and the certificates it
// signs, written and loaded as `chiffon tls ca create`, `chiffon tls cert
// create` and a node's -tls-ca/-tls-cert/-tls-key would: one place for the
// TLS tests of consensus, node, worker and dispatch.
package tlstest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// CA is one test's cluster CA, its files under a temp dir.
type CA struct {
	CA *tlsutil.CA
	// Dir holds the CA file and every certificate signed.
	Dir string
	// File is the CA certificate (what -tls-ca names).
	File string
}

// New makes a CA valid for 30 days in the default domain.
func New(t testing.TB) *CA {
	t.Helper()
	certPEM, keyPEM, err := tlsutil.GenerateCA(tlsutil.DefaultDomain, 30)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(file, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return &CA{CA: ca, Dir: dir, File: file}
}

// Files signs a one-day certificate of role for node and returns its
// certificate and key files.
func (c *CA) Files(t testing.TB, role tlsutil.Role, node string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := c.CA.Sign(tlsutil.CertRequest{Role: role, Node: node, Days: 1})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = tlsutil.CertFileNames(role, node, tlsutil.DefaultDomain)
	certFile, keyFile = filepath.Join(c.Dir, certFile), filepath.Join(c.Dir, keyFile)
	_ = os.Remove(certFile) // a test may sign the same name twice
	_ = os.Remove(keyFile)
	if err := tlsutil.WritePair(certFile, certPEM, keyFile, keyPEM); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// Bundle signs a certificate of role for node and loads it with the CA,
// as a node loads its TLS flags.
func (c *CA) Bundle(t testing.TB, role tlsutil.Role, node string) *tlsutil.Bundle {
	t.Helper()
	cf, kf := c.Files(t, role, node)
	b, err := tlsutil.LoadBundle(c.File, cf, kf, "")
	if err != nil {
		t.Fatal(err)
	}
	return b
}
