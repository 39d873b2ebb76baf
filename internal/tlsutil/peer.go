package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"time"
)

// ClientName is the DNS name a client (desktop) certificate for node
// carries: "<node>.client.<domain>".
func ClientName(node, domain string) string { return node + ".client." + domain }

// VerifyNode checks that cert chains to a CA in roots, is valid now, and
// names node in either role: "<node>.client.<domain>" (a desktop) or
// "<node>.server.<domain>" (an orchestrator that also takes work). It is
// what the leader asks of a desktop's work endpoint before it sends that
// desktop work: the certificate must be the one the CA gave to the node
// the registry places the work on, whatever address gossip advertised.
// A certificate for another node fails with ErrNotNode.
func VerifyNode(cert *x509.Certificate, node, domain string, roots *x509.CertPool) error {
	if cert == nil {
		return fmt.Errorf("%w: no certificate", ErrNotNode)
	}
	if err := checkNode(node); err != nil {
		return err
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("verify certificate %q: %w", cert.Subject.CommonName, err)
	}
	if cert.VerifyHostname(ClientName(node, domain)) != nil && cert.VerifyHostname(ServerName(node, domain)) != nil {
		return fmt.Errorf("%w: %q (%s) names neither %s nor %s", ErrNotNode, cert.Subject.CommonName,
			strings.Join(cert.DNSNames, ", "), ClientName(node, domain), ServerName(node, domain))
	}
	return nil
}

// NodeClientConfig is the dialling side towards one named node's
// endpoint (the leader towards a desktop's work endpoint): it presents
// the bundle's certificate and accepts only a peer certificate that
// VerifyNode accepts for node, whatever host name or IP the address has.
// It needs the CA (LoadBundle with a CA file): without one it refuses
// every peer.
func (b *Bundle) NodeClientConfig(node string) *tls.Config {
	roots, domain := b.Roots, b.Domain
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{b.Cert},
		// The chain and the name are checked in VerifyConnection, against
		// the node's names instead of the dialled address.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if roots == nil {
				return fmt.Errorf("%w: no cluster CA (-tls-ca) to verify node %s with", ErrNotNode, node)
			}
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: node %s presented no certificate", ErrNotNode, node)
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: time.Now(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("verify node %s's certificate %q: %w", node, leaf.Subject.CommonName, err)
			}
			return VerifyNode(leaf, node, domain, roots)
		},
	}
}

// verifyServerPeer is ClientConfig's check that the peer it reached is an
// orchestrator: the chain was verified by crypto/tls; the leaf must be a
// server certificate of the domain.
func verifyServerPeer(domain string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 || !IsServerCert(cs.PeerCertificates[0], domain) {
			name := "no certificate"
			if len(cs.PeerCertificates) > 0 {
				name = cs.PeerCertificates[0].Subject.CommonName
			}
			return fmt.Errorf("%w: the peer (%s) is not a server of %s", ErrNotServer, name, domain)
		}
		return nil
	}
}
