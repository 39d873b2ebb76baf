package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// testPKI is one cluster CA per test binary run, kept under binDir, and
// the certificates the process tests hand to nodes and clients: what
// `chiffon tls ca create` and `chiffon tls cert create` would write.
type testPKI struct {
	dir string
	ca  *tlsutil.CA
	// CAFile is the CA certificate every node and client trusts (-tls-ca).
	CAFile string

	mu    sync.Mutex
	certs map[string][2]string // "<role>/<node>" → cert, key
}

var (
	pkiOnce sync.Once
	pkiVal  *testPKI
	pkiErr  error
)

// testGossipKey is the run's gossip key: the process-test helpers give
// it to every node they start, as an operator gives one key to a cluster.
var testGossipKey = func() string {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}()

// pki returns the run's CA, making it on first use.
func pki(t testing.TB) *testPKI {
	t.Helper()
	p, err := loadPKI()
	if err != nil {
		t.Fatalf("test CA: %v", err)
	}
	return p
}

func loadPKI() (*testPKI, error) {
	pkiOnce.Do(func() {
		dir := filepath.Join(binDir, "pki")
		if pkiErr = os.MkdirAll(dir, 0o700); pkiErr != nil {
			return
		}
		certPEM, keyPEM, err := tlsutil.GenerateCA(tlsutil.DefaultDomain, 60)
		if err != nil {
			pkiErr = err
			return
		}
		ca, err := tlsutil.ParseCA(certPEM, keyPEM)
		if err != nil {
			pkiErr = err
			return
		}
		caFile := filepath.Join(dir, "ca.pem")
		if pkiErr = os.WriteFile(caFile, certPEM, 0o600); pkiErr != nil {
			return
		}
		pkiVal = &testPKI{dir: dir, ca: ca, CAFile: caFile, certs: map[string][2]string{}}
	})
	return pkiVal, pkiErr
}

// cert returns the files of a certificate of role for node, signing it
// on first use.
func (p *testPKI) cert(t testing.TB, role tlsutil.Role, node string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := p.certFiles(role, node)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func (p *testPKI) certFiles(role tlsutil.Role, node string) (certFile, keyFile string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := role.String() + "/" + node
	if f, ok := p.certs[k]; ok {
		return f[0], f[1], nil
	}
	certPEM, keyPEM, err := p.ca.Sign(tlsutil.CertRequest{Role: role, Node: node, Days: 30})
	if err != nil {
		return "", "", fmt.Errorf("sign %s certificate for %s: %w", role, node, err)
	}
	certFile, keyFile = tlsutil.CertFileNames(role, node, tlsutil.DefaultDomain)
	certFile, keyFile = filepath.Join(p.dir, certFile), filepath.Join(p.dir, keyFile)
	if err := tlsutil.WritePair(certFile, certPEM, keyFile, keyPEM); err != nil {
		return "", "", fmt.Errorf("write %s certificate for %s: %w", role, node, err)
	}
	p.certs[k] = [2]string{certFile, keyFile}
	return certFile, keyFile, nil
}

// serverArgs are the agent flags of an orchestrator named node.
func (p *testPKI) serverArgs(t testing.TB, node string) []string {
	c, k := p.cert(t, tlsutil.RoleServer, node)
	return []string{"-tls-ca", p.CAFile, "-tls-cert", c, "-tls-key", k}
}

// clientArgs are the flags of a desktop (or a CLI user) named node.
func (p *testPKI) clientArgs(t testing.TB, node string) []string {
	c, k := p.cert(t, tlsutil.RoleClient, node)
	return []string{"-tls-ca", p.CAFile, "-tls-cert", c, "-tls-key", k}
}

// httpClient is an HTTPS client holding a client certificate for node.
// It trusts the test CA and accepts any orchestrator's server
// certificate (all name "server.<domain>"), whatever loopback IP the
// URL has.
func (p *testPKI) httpClient(t testing.TB, node string) *http.Client {
	t.Helper()
	hc, err := p.client(node)
	if err != nil {
		t.Fatal(err)
	}
	return hc
}

func (p *testPKI) client(node string) (*http.Client, error) {
	c, k, err := p.certFiles(tlsutil.RoleClient, node)
	if err != nil {
		return nil, err
	}
	b, err := tlsutil.LoadBundle(p.CAFile, c, k, "")
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = b.ClientConfig("server." + tlsutil.DefaultDomain)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}, nil
}

// pkiHTTPClient is the process tests' shared HTTPS client (getJSON).
var pkiHTTPClient = sync.OnceValues(func() (*http.Client, error) {
	p, err := loadPKI()
	if err != nil {
		return nil, err
	}
	return p.client("process-tests")
})

// TestTestPKI_ClientReachesTLSOrchestrator checks the helper itself: an
// orchestrator given serverArgs answers httpClient over mutual TLS and
// refuses a plain HTTPS client without a certificate.
func TestTestPKI_ClientReachesTLSOrchestrator(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	p := pki(t)
	s := newOrchSpec(t, "pki1", "127.0.0.1", 1, "") // serverArgs by default
	s.start(t)
	hc := p.httpClient(t, "cli")
	waitFor(t, 30*time.Second, "HTTPS /v1/status/leader", func() (bool, string) {
		resp, err := hc.Get("https://" + s.httpAddr + "/v1/status/leader")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	anon := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := anon.Get("https://" + s.httpAddr + "/v1/status/leader"); err == nil {
		resp.Body.Close()
		t.Fatalf("a client without a certificate got %s", resp.Status)
	}
}
