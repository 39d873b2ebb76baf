package node

import (
	"fmt"

	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// TLSConfig is the node's cluster TLS material, for every role: an
// orchestrator serves the HTTP API with it and (issue 11) talks raft and
// delivers work over it; a desktop serves its work endpoint with it.
// Make the files with `chiffon tls ca create` and `chiffon tls cert
// create -server|-client -node NAME`.
type TLSConfig struct {
	// CAFile is the cluster CA (-tls-ca): peers must hold a certificate
	// signed by it.
	CAFile string
	// CertFile and KeyFile are the node's own certificate (-tls-cert,
	// -tls-key).
	CertFile, KeyFile string
	// Domain is the domain the role names live under (-tls-domain,
	// default "chiffon").
	Domain string
}

// Enabled reports whether the node has a certificate to serve with.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" }

func (c *TLSConfig) validate() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("%w: -tls-cert and -tls-key go together", ErrInvalidConfig)
	}
	if c.CAFile != "" && c.CertFile == "" {
		return fmt.Errorf("%w: -tls-ca needs -tls-cert and -tls-key", ErrInvalidConfig)
	}
	return nil
}

// loadTLS reads the TLS material once at start (nil when none is set).
func (c TLSConfig) load() (*tlsutil.Bundle, error) {
	if !c.Enabled() {
		return nil, nil
	}
	b, err := tlsutil.LoadBundle(c.CAFile, c.CertFile, c.KeyFile, c.Domain)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return b, nil
}
