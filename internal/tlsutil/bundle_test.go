package tlsutil

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// writeFile writes data to dir/name and returns the path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A server and a client bundle from one CA talk mutual TLS; the server
// sees which role the client holds, and a client without a certificate
// is refused in the handshake.
func TestBundle_MutualTLSAndRoles(t *testing.T) {
	dir := t.TempDir()
	caPEM, caKey, err := GenerateCA(DefaultDomain, 400)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCA(caPEM, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := writeFile(t, dir, "ca.pem", caPEM)
	srvCert, srvKey := sign(t, ca, CertRequest{Role: RoleServer, Node: "orch-1", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	cliCert, cliKey := sign(t, ca, CertRequest{Role: RoleClient, Node: "desk-1"})
	srv, err := LoadBundle(caFile, writeFile(t, dir, "s.pem", srvCert), writeFile(t, dir, "s-key.pem", srvKey), "")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := LoadBundle(caFile, writeFile(t, dir, "c.pem", cliCert), writeFile(t, dir, "c-key.pem", cliKey), "")
	if err != nil {
		t.Fatal(err)
	}
	if !srv.IsServer() || cli.IsServer() {
		t.Fatalf("IsServer: server %v client %v", srv.IsServer(), cli.IsServer())
	}
	if got, want := srv.NotAfter(), srv.Cert.Leaf.NotAfter; !got.Equal(want) {
		t.Fatalf("NotAfter %v, want the leaf's %v (it expires before the CA)", got, want)
	}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan error, 2)
	go func() {
		for range 2 {
			c, err := ln.Accept()
			if err != nil {
				peers <- err
				return
			}
			tc := c.(*tls.Conn)
			err = tc.Handshake()
			if err == nil {
				if st := tc.ConnectionState(); len(st.PeerCertificates) == 0 || IsServerCert(st.PeerCertificates[0], DefaultDomain) {
					err = errors.New("want the client's desktop certificate")
				}
			}
			c.Close()
			peers <- err
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cli.ClientConfig(ServerName("orch-1", DefaultDomain)))
	if err != nil {
		t.Fatalf("mutual TLS dial: %v", err)
	}
	c.Close()
	if err := <-peers; err != nil {
		t.Fatalf("server side: %v", err)
	}
	anon := &tls.Config{RootCAs: srv.Roots, ServerName: ServerName("orch-1", DefaultDomain)}
	if c, err := tls.Dial("tcp", ln.Addr().String(), anon); err == nil {
		c.Write([]byte("x"))
		c.Close()
	}
	if err := <-peers; err == nil {
		t.Fatal("a client without a certificate completed the handshake")
	}
}

func TestLoadBundle_Errors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadBundle("", "", "", ""); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("no files: %v", err)
	}
	bad := writeFile(t, dir, "bad.pem", []byte("not pem"))
	if _, err := LoadBundle("", bad, bad, ""); err == nil {
		t.Fatal("garbage key pair loaded")
	}
}

// TestLoadBundle_TwoCAsDuringRotation: with the old and the new CA in one
// -tls-ca file, a node trusts certificates of both, and its CA is the one
// that signed its own certificate (what the expiry metric reports).
func TestLoadBundle_TwoCAsDuringRotation(t *testing.T) {
	dir := t.TempDir()
	var cas []*CA
	var pems []byte
	for range 2 {
		c, k, err := GenerateCA(DefaultDomain, 400)
		if err != nil {
			t.Fatal(err)
		}
		ca, err := ParseCA(c, k)
		if err != nil {
			t.Fatal(err)
		}
		cas, pems = append(cas, ca), append(pems, c...)
	}
	caFile := writeFile(t, dir, "bundle.pem", pems)
	newCert, newKey := sign(t, cas[1], CertRequest{Role: RoleServer, Node: "orch-new"})
	oldCert, _ := sign(t, cas[0], CertRequest{Role: RoleServer, Node: "orch-old"})
	b, err := LoadBundle(caFile, writeFile(t, dir, "n.pem", newCert), writeFile(t, dir, "n-key.pem", newKey), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.CAs) != 2 || !b.CA.Equal(cas[1].Cert) {
		t.Fatalf("CAs %d, CA %q; want 2 and the new CA, which signed the node", len(b.CAs), b.CA.Subject)
	}
	for name, pemData := range map[string][]byte{"orch-old": oldCert, "orch-new": newCert} {
		if err := VerifyServer(mustParse(t, pemData), name, DefaultDomain, b.Roots); err != nil {
			t.Errorf("%s (its CA is in the bundle): %v", name, err)
		}
	}
}
