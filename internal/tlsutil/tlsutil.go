// Package tlsutil is Chiffon's cluster certificate authority, the Consul
// way: one CA per cluster (ECDSA P-256), and leaf certificates that carry
// a role in their names. A server certificate for node N names
// "server.<domain>" and "N.server.<domain>"; a client (desktop) certificate
// names "client.<domain>" and "N.client.<domain>", and the CA refuses to put
// a name under "server.<domain>" into it. So a verifier can ask "is this a
// server certificate for node N?" (VerifyServer), as Consul's
// verify_server_hostname does, and a desktop's certificate never answers
// yes.
//
// Both roles carry the ServerAuth and ClientAuth key usages: a desktop
// serves its work endpoint over HTTPS as well as calling the leader, so
// the role cannot live in the key usage; it lives in the names.
//
// Only the standard library is used. The CLI (`chiffon tls ...`) is a thin
// layer over GenerateCA, (*CA).Sign and WriteNew.
package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// Defaults, as Consul's `tls ca create` and `tls cert create` have them.
const (
	// DefaultDomain is the domain the role names live under.
	DefaultDomain = "chiffon"
	// DefaultCADays is how long a CA is valid: five years.
	DefaultCADays = 1825
	// DefaultCertDays is how long a server or client certificate is valid.
	DefaultCertDays = 365
)

// backdate is how far before "now" a certificate becomes valid, so that a
// peer whose clock is a little behind accepts a certificate made just now.
const backdate = time.Minute

// Errors returned by this package; match them with errors.Is.
var (
	// ErrInvalidRequest: a bad domain, node name, role, validity or name.
	ErrInvalidRequest = errors.New("invalid certificate request")
	// ErrExists: WriteNew refuses to replace a file that is already there.
	ErrExists = errors.New("file already exists")
	// ErrNotServer: the certificate verifies but is not a server
	// certificate for the node asked about.
	ErrNotServer = errors.New("not a server certificate for this node")
	// ErrNotNode: the certificate verifies but names another node
	// (VerifyNode, NodeClientConfig).
	ErrNotNode = errors.New("not a certificate for this node")
)

// Role is what a leaf certificate is for.
type Role int

const (
	// RoleServer is an orchestrator: a raft voter candidate.
	RoleServer Role = iota + 1
	// RoleClient is a desktop (or a CLI user).
	RoleClient
)

// String is the role's word in names and file names: "server" or "client".
func (r Role) String() string {
	switch r {
	case RoleServer:
		return "server"
	case RoleClient:
		return "client"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// CAFileNames are the file names `chiffon tls ca create` writes for domain:
// "<domain>-agent-ca.pem" and "<domain>-agent-ca-key.pem".
func CAFileNames(domain string) (cert, key string) {
	return domain + "-agent-ca.pem", domain + "-agent-ca-key.pem"
}

// CertFileNames are the file names for a leaf certificate:
// "<domain>-<role>-<node>.pem" and "<domain>-<role>-<node>-key.pem".
func CertFileNames(role Role, node, domain string) (cert, key string) {
	base := fmt.Sprintf("%s-%s-%s", domain, role, node)
	return base + ".pem", base + "-key.pem"
}

// ServerName is the DNS name a server certificate for node carries and
// VerifyServer checks: "<node>.server.<domain>".
func ServerName(node, domain string) string { return node + ".server." + domain }

// CA is a loaded certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// GenerateCA makes a new self-signed CA for domain, valid for days days
// from now, and returns its certificate and key as PEM.
func GenerateCA(domain string, days int) (certPEM, keyPEM []byte, err error) {
	return generateCA(domain, days, time.Now())
}

func generateCA(domain string, days int, now time.Time) (certPEM, keyPEM []byte, err error) {
	if err := checkDomain(domain); err != nil {
		return nil, nil, err
	}
	if days < 1 {
		return nil, nil, fmt.Errorf("%w: the CA must be valid for at least 1 day, got %d", ErrInvalidRequest, days)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The serial in the name tells two clusters' CAs apart in logs.
		Subject:               pkix.Name{CommonName: fmt.Sprintf("Chiffon Agent CA %s (%s)", serial.Text(16)[:8], domain)},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.AddDate(0, 0, days),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // signs leaves only
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	return encode(der, key)
}

// ParseCA reads a CA from its PEM certificate and key, as GenerateCA
// returns them, and checks that they belong together.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%w: %q is not a CA certificate", ErrInvalidRequest, cert.Subject.CommonName)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "EC PRIVATE KEY" {
		return nil, fmt.Errorf("%w: the CA key is not a PEM \"EC PRIVATE KEY\"", ErrInvalidRequest)
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("%w: the CA key does not match the CA certificate", ErrInvalidRequest)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA from its certificate and key files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", certFile, keyFile, err)
	}
	return ca, nil
}

// ParseCert decodes the first PEM certificate in data.
func ParseCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: no PEM \"CERTIFICATE\" found", ErrInvalidRequest)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, nil
}

// Pool is a certificate pool holding only the CA, for RootCAs/ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// CertRequest describes a leaf certificate for Sign.
type CertRequest struct {
	Role   Role
	Node   string // the node's name (chiffon agent -node-name)
	Domain string // DefaultDomain when ""
	Days   int    // DefaultCertDays when 0
	// DNSNames and IPs are added to the role's own names: an
	// orchestrator's advertised address (an IP SAN for 10.0.0.5), say.
	// Names under "server.<domain>" or "client.<domain>" are refused: the
	// role's names are the CA's to give.
	DNSNames []string
	IPs      []net.IP
	// Now is the issue time; zero means time.Now(). Tests set it.
	Now time.Time
}

// Sign issues a leaf certificate with a new ECDSA P-256 key and returns
// both as PEM. Every certificate names "localhost" and 127.0.0.1 (as
// Consul's do), so a cluster on loopback works with the defaults. A
// certificate may not outlive its CA.
func (ca *CA) Sign(req CertRequest) (certPEM, keyPEM []byte, err error) {
	if req.Domain == "" {
		req.Domain = DefaultDomain
	}
	if req.Days == 0 {
		req.Days = DefaultCertDays
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	if err := checkDomain(req.Domain); err != nil {
		return nil, nil, err
	}
	if req.Role != RoleServer && req.Role != RoleClient {
		return nil, nil, fmt.Errorf("%w: role must be server or client", ErrInvalidRequest)
	}
	if err := checkNode(req.Node); err != nil {
		return nil, nil, err
	}
	if req.Days < 1 {
		return nil, nil, fmt.Errorf("%w: a certificate must be valid for at least 1 day, got %d", ErrInvalidRequest, req.Days)
	}
	notAfter := now.AddDate(0, 0, req.Days)
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("%w: a %d-day certificate would outlive the CA, which expires %s; ask for fewer days or make a new CA",
			ErrInvalidRequest, req.Days, ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	}
	roleBase := req.Role.String() + "." + req.Domain
	dns := []string{roleBase, req.Node + "." + roleBase, "localhost"}
	for _, n := range req.DNSNames {
		l := strings.ToLower(strings.TrimSuffix(n, "."))
		for _, reserved := range []string{"server." + strings.ToLower(req.Domain), "client." + strings.ToLower(req.Domain)} {
			if l == reserved || strings.HasSuffix(l, "."+reserved) {
				return nil, nil, fmt.Errorf("%w: extra DNS name %q is under %q, which only the role's own names may be", ErrInvalidRequest, n, reserved)
			}
		}
		if l == "" || strings.ContainsAny(l, "* /") {
			return nil, nil, fmt.Errorf("%w: extra DNS name %q is not a host name", ErrInvalidRequest, n)
		}
		dns = append(dns, n)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	for _, ip := range req.IPs {
		if ip == nil {
			return nil, nil, fmt.Errorf("%w: empty IP address", ErrInvalidRequest)
		}
		if !ip.Equal(ips[0]) {
			ips = append(ips, ip)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.Node + "." + roleBase},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	return encode(der, key)
}

// IsServerCert reports whether cert names itself a server of domain (it
// carries "server.<domain>"). It does not check the chain: use
// VerifyServer for a peer's certificate.
func IsServerCert(cert *x509.Certificate, domain string) bool {
	return cert.VerifyHostname("server."+domain) == nil
}

// VerifyServer checks that cert chains to a CA in roots, is valid now, and
// is a server certificate for node: it names "<node>.server.<domain>".
// A client certificate, or a server certificate for another node, fails
// with ErrNotServer; a bad chain or an expired certificate with the
// x509 error. This is what a peer asks before trusting a node as an
// orchestrator (raft voter, sender of work).
func VerifyServer(cert *x509.Certificate, node, domain string, roots *x509.CertPool) error {
	return verifyServer(cert, node, domain, roots, time.Time{})
}

func verifyServer(cert *x509.Certificate, node, domain string, roots *x509.CertPool, now time.Time) error {
	if cert == nil {
		return fmt.Errorf("%w: no certificate", ErrNotServer)
	}
	if err := checkNode(node); err != nil {
		return err
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("verify certificate %q: %w", cert.Subject.CommonName, err)
	}
	if !IsServerCert(cert, domain) || cert.VerifyHostname(ServerName(node, domain)) != nil {
		return fmt.Errorf("%w: %q (%s) does not name %s", ErrNotServer, cert.Subject.CommonName,
			strings.Join(cert.DNSNames, ", "), ServerName(node, domain))
	}
	return nil
}

// WriteNew writes data to a new file with the given mode and refuses, with
// ErrExists, to replace one that is there: a CA key overwritten by mistake
// cannot be brought back.
func WriteNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: %s (move it away or choose another directory)", ErrExists, path)
	}
	if err != nil {
		return err
	}
	// OpenFile's mode is subject to the umask; a key must end up 0600
	// whatever the umask, and a certificate no looser than asked.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// WritePair writes a certificate (0644) and its key (0600), refusing with
// ErrExists before writing anything when either file is already there.
func WritePair(certFile string, certPEM []byte, keyFile string, keyPEM []byte) error {
	for _, p := range []string{certFile, keyFile} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%w: %s (move it away or choose another directory)", ErrExists, p)
		}
	}
	if err := WriteNew(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	if err := WriteNew(certFile, certPEM, 0o644); err != nil {
		os.Remove(keyFile)
		return err
	}
	return nil
}

func encode(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("random serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil // never 0
}

// checkDomain accepts a DNS name of letters, digits, '-' and inner dots.
func checkDomain(d string) error {
	if !validName(d, true) {
		return fmt.Errorf("%w: domain %q: want letters, digits, '-' and inner dots (e.g. chiffon)", ErrInvalidRequest, d)
	}
	return nil
}

// checkNode accepts one DNS label (letters, digits, '-', '_'), so that
// "<node>.server.<domain>" names exactly one node and a node name cannot
// reach into another part of the name space.
func checkNode(n string) error {
	if !validName(n, false) {
		return fmt.Errorf("%w: node name %q: want letters, digits, '-' and '_', without dots (e.g. orch-1)", ErrInvalidRequest, n)
	}
	return nil
}

func validName(s string, dots bool) bool {
	if s == "" || len(s) > 253 || s[0] == '.' || s[0] == '-' || s[len(s)-1] == '.' || s[len(s)-1] == '-' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
		case r == '_' && !dots:
		case r == '.' && dots:
		default:
			return false
		}
	}
	return true
}
