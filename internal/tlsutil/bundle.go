package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"
)

// Bundle is a node's loaded TLS material (-tls-ca, -tls-cert, -tls-key,
// -tls-domain): its own certificate and key, and the cluster CA it trusts
// and requires of peers. Raft, the HTTP API and work delivery all build
// their tls.Config from one Bundle, so the three speak the same trust.
type Bundle struct {
	// Cert is the node's certificate and key; Cert.Leaf is parsed.
	Cert tls.Certificate
	// Roots holds the cluster CA; nil when no CA file was given.
	Roots *x509.CertPool
	// CAs are the CA certificates of the CA file: usually one, two while
	// the cluster moves to a new CA (docs/OPERATIONS.md, rotating the
	// CA); all of them are in Roots.
	CAs []*x509.Certificate
	// CA is the one of CAs that signed the node's certificate (the first
	// when none did); nil without a CA file.
	CA *x509.Certificate
	// Domain is the domain the role names live under (DefaultDomain).
	Domain string
}

// LoadBundle reads the node's certificate and key and, when caFile is
// set, the cluster CA. domain "" means DefaultDomain.
func LoadBundle(caFile, certFile, keyFile, domain string) (*Bundle, error) {
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("%w: TLS needs both a certificate and a key", ErrInvalidRequest)
	}
	if domain == "" {
		domain = DefaultDomain
	}
	if err := checkDomain(domain); err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair %s: %w", certFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse %s: %w", certFile, err)
		}
	}
	b := &Bundle{Cert: cert, Domain: domain}
	if caFile != "" {
		data, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read TLS CA: %w", err)
		}
		if b.CAs, err = parseCerts(data); err != nil {
			return nil, fmt.Errorf("%s: %w", caFile, err)
		}
		b.Roots = x509.NewCertPool()
		b.CA = b.CAs[0]
		for _, ca := range b.CAs {
			b.Roots.AddCert(ca)
			if cert.Leaf.CheckSignatureFrom(ca) == nil {
				b.CA = ca
			}
		}
	}
	return b, nil
}

// NotAfter is when the first of the node's certificate and the CA expires.
func (b *Bundle) NotAfter() time.Time {
	t := b.Cert.Leaf.NotAfter
	if b.CA != nil && b.CA.NotAfter.Before(t) {
		t = b.CA.NotAfter
	}
	return t
}

// IsServer reports whether the node's own certificate is a server
// (orchestrator) certificate of the bundle's domain.
func (b *Bundle) IsServer() bool { return IsServerCert(b.Cert.Leaf, b.Domain) }

// ServerConfig is the listening side: it serves the node's certificate
// and, with a CA, requires and verifies a client certificate signed by it.
// Callers that need a role (a server certificate) check the verified peer
// with VerifyServer or IsServerCert.
func (b *Bundle) ServerConfig() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{b.Cert}}
	if b.Roots != nil {
		cfg.ClientCAs = b.Roots
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg
}

// ClientConfig is the dialling side towards an orchestrator: it trusts
// the cluster CA (the system roots without one), presents the node's
// certificate, and accepts only a peer holding a server certificate of
// the bundle's domain, so a desktop's certificate (which also names
// 127.0.0.1 and localhost) never passes for an orchestrator, whatever the
// URL. serverName is the name the peer's certificate must carry as well
// (e.g. ServerName(node, domain)); "" leaves the host-name check to the
// caller's URL. To dial a desktop, use NodeClientConfig.
func (b *Bundle) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{b.Cert},
		RootCAs: b.Roots, ServerName: serverName, VerifyConnection: verifyServerPeer(b.Domain)}
}

// parseCerts reads every PEM certificate in data (at least one).
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no PEM \"CERTIFICATE\" found", ErrInvalidRequest)
	}
	return out, nil
}
