package api

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/chiffon-dev/chiffon/api/client"
)

// ServerTLSConfig loads the server side of -tls-cert, -tls-key and
// -tls-ca: the certificate and key to serve with and, when caFile is set,
// the CA whose client certificates are required.
func ServerTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("%w: TLS needs both a certificate and a key", ErrInvalidConfig)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrInvalidConfig, caFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ForwardTLSConfig is the client side that a node forwarding to the leader
// uses: it trusts caFile (the system roots when "") and presents the node's
// own certificate, which the leader requires when it was given a CA.
func ForwardTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	return client.TLSConfig(caFile, certFile, keyFile)
}
