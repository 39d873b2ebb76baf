package tlsutil

import (
	"crypto/tls"
	"errors"
	"testing"
)

// loadBundle signs a certificate for req with ca and loads it as a node
// would (-tls-ca, -tls-cert, -tls-key).
func loadBundle(t *testing.T, ca *CA, caPEM []byte, req CertRequest) *Bundle {
	t.Helper()
	dir := t.TempDir()
	c, k := sign(t, ca, req)
	b, err := LoadBundle(writeFile(t, dir, "ca.pem", caPEM), writeFile(t, dir, "c.pem", c), writeFile(t, dir, "k.pem", k), "")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dial runs one handshake between a server serving srv's certificate
// and a client with cfg, and returns the client's error.
func dial(t *testing.T, srv *Bundle, cfg *tls.Config) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c, err := ln.Accept(); err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err == nil {
		c.Close()
	}
	<-done
	return err
}

// TestClientConfig_RefusesNonServerPeers: the client side every call to
// an orchestrator builds on accepts only a server certificate, even
// where the URL's host (127.0.0.1, which every certificate names) would
// pass the host-name check.
func TestClientConfig_RefusesNonServerPeers(t *testing.T) {
	caPEM, caKey, err := GenerateCA(DefaultDomain, 400)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCA(caPEM, caKey)
	if err != nil {
		t.Fatal(err)
	}
	orch := loadBundle(t, ca, caPEM, CertRequest{Role: RoleServer, Node: "orch-1"})
	desk := loadBundle(t, ca, caPEM, CertRequest{Role: RoleClient, Node: "desk-1"})
	if err := dial(t, orch, desk.ClientConfig("")); err != nil {
		t.Fatalf("desktop to orchestrator: %v", err)
	}
	if err := dial(t, desk, orch.ClientConfig("")); !errors.Is(err, ErrNotServer) {
		t.Fatalf("a desktop's certificate passed for an orchestrator: %v, want ErrNotServer", err)
	}
}

// TestNodeClientConfig_NamesTheNode: the leader's side towards a desktop
// accepts the certificate of the node it means, in either role, and
// refuses another node's, whatever address it dialled.
func TestNodeClientConfig_NamesTheNode(t *testing.T) {
	caPEM, caKey, err := GenerateCA(DefaultDomain, 400)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCA(caPEM, caKey)
	if err != nil {
		t.Fatal(err)
	}
	orch := loadBundle(t, ca, caPEM, CertRequest{Role: RoleServer, Node: "orch-1"})
	desk := loadBundle(t, ca, caPEM, CertRequest{Role: RoleClient, Node: "desk-1"})
	for _, tc := range []struct {
		name string
		srv  *Bundle
		node string
		ok   bool
	}{
		{"desktop's own name", desk, "desk-1", true},
		{"orchestrator that takes work", orch, "orch-1", true},
		{"another desktop's name", desk, "desk-2", false},
		{"a server certificate for another node", orch, "desk-1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := dial(t, tc.srv, orch.NodeClientConfig(tc.node))
			if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrNotNode)) {
				t.Fatalf("dial %s: %v, want ok=%v (else ErrNotNode)", tc.node, err, tc.ok)
			}
		})
	}
	otherPEM, otherKey, err := GenerateCA(DefaultDomain, 400)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ParseCA(otherPEM, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	foreign := loadBundle(t, other, otherPEM, CertRequest{Role: RoleClient, Node: "desk-1"})
	if err := dial(t, foreign, orch.NodeClientConfig("desk-1")); err == nil {
		t.Fatal("another CA's certificate for desk-1 passed")
	}
}
