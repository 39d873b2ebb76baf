package consensus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// ErrNotServerPeer is the handshake error a raft listener over TLS gives a
// peer whose CA-signed certificate is not a server (orchestrator)
// certificate of the cluster's domain, such as a desktop's client
// certificate.
var ErrNotServerPeer = errors.New("raft peer certificate is not a server certificate")

// tlsStream is raft's StreamLayer over mutual TLS. Its listener requires
// every peer to present a certificate signed by the cluster CA and refuses,
// in the handshake, one that is not a server certificate of the domain; its
// dials require the same of the peer they reach (the name
// "server.<domain>", which a client certificate can never carry).
//
// The listener is tls.NewListener over TCP, so the handshake runs on the
// connection's first read, in the transport's per-connection goroutine: a
// slow or silent peer never holds up Accept.
type tlsStream struct {
	net.Listener
	// advertise is the address given to peers (nil: the bound one).
	advertise net.Addr
	// dial is the client side: cluster CA, our certificate, and
	// ServerName "server.<domain>".
	dial *tls.Config
}

var _ raft.StreamLayer = (*tlsStream)(nil)

// newTLSStream listens on bindAddr with b's certificate. b must carry the
// cluster CA (Roots): mutual TLS without a CA would trust nobody.
func newTLSStream(bindAddr string, advertise net.Addr, b *tlsutil.Bundle, logger *slog.Logger) (*tlsStream, error) {
	if b.Roots == nil {
		return nil, fmt.Errorf("%w: raft over TLS needs the cluster CA (-tls-ca)", ErrInvalidConfig)
	}
	ln, err := net.Listen("tcp", bindAddr)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("%w: raft over TLS on %s needs an advertise address", ErrInvalidConfig, bindAddr)
		}
	}
	base := b.ServerConfig() // requires and verifies a CA-signed peer certificate
	domain := b.Domain
	srv := base.Clone()
	srv.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		remote := hello.Conn.RemoteAddr().String()
		c := base.Clone()
		// VerifyConnection runs after the chain has been verified against
		// the CA: what is left to check is the role.
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrNotServerPeer // unreachable: ClientAuth requires one
			}
			leaf := cs.PeerCertificates[0]
			if !tlsutil.IsServerCert(leaf, domain) {
				logger.Warn("refused raft connection: peer certificate is not a server certificate",
					"remote", remote, "subject", leaf.Subject.CommonName, "names", leaf.DNSNames)
				return fmt.Errorf("%w: %q", ErrNotServerPeer, leaf.Subject.CommonName)
			}
			return nil
		}
		return c, nil
	}
	return &tlsStream{
		Listener:  tls.NewListener(ln, srv),
		advertise: advertise,
		dial:      b.ClientConfig("server." + domain),
	}, nil
}

// Addr is the address peers are told to dial.
func (s *tlsStream) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.Listener.Addr()
}

// Dial connects to a peer and completes the TLS handshake within timeout,
// so a peer without a server certificate fails here rather than mid-RPC.
func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", string(addr), s.dial)
	if err != nil {
		return nil, fmt.Errorf("raft TLS dial %s: %w", addr, err)
	}
	return conn, nil
}

// newTLSTransport is raft's NetworkTransport over a tlsStream.
func newTLSTransport(c *Config, advertise net.Addr, logger *slog.Logger, hl hclog.Logger) (*raft.NetworkTransport, error) {
	stream, err := newTLSStream(c.BindAddr, advertise, c.TLS, logger)
	if err != nil {
		return nil, err
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: tcpMaxPool,
		Timeout: c.TransportTimeout,
		Logger:  hl.Named("transport"),
	}), nil
}
