package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/chiffon-dev/chiffon/internal/tlsutil"
	"github.com/chiffon-dev/chiffon/node"
)

// devCLIName is the client certificate the dev cluster makes for the
// user's CLI, curl and browser.
const devCLIName = "cli"

// devSecurity is the dev cluster's gossip key and TLS material, kept in
// its data dir: what `chiffon keygen`, `chiffon tls ca create` and `tls
// cert create` would make, so the dev cluster runs secured as production
// should. With -data-dir a second run reuses them; an existing CA is never
// replaced.
type devSecurity struct {
	dir     string // <data dir>/tls
	keyFile string // <data dir>/gossip.key
	key     string
	ca      *tlsutil.CA
	caFile  string
}

// newDevSecurity loads or makes the key and the CA under dataDir.
func newDevSecurity(dataDir string) (*devSecurity, error) {
	d := &devSecurity{dir: filepath.Join(dataDir, "tls"), keyFile: filepath.Join(dataDir, "gossip.key")}
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(d.keyFile)
	switch {
	case err == nil:
		d.key = strings.TrimSpace(string(b))
	case errors.Is(err, fs.ErrNotExist):
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		d.key = base64.StdEncoding.EncodeToString(k)
		if err := tlsutil.WriteNew(d.keyFile, []byte(d.key+"\n"), 0o600); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("gossip key: %w", err)
	}
	certName, keyName := tlsutil.CAFileNames(tlsutil.DefaultDomain)
	d.caFile = filepath.Join(d.dir, certName)
	caKey := filepath.Join(d.dir, keyName)
	if _, err := os.Stat(d.caFile); errors.Is(err, fs.ErrNotExist) {
		certPEM, keyPEM, err := tlsutil.GenerateCA(tlsutil.DefaultDomain, tlsutil.DefaultCADays)
		if err != nil {
			return nil, err
		}
		if err := tlsutil.WritePair(d.caFile, certPEM, caKey, keyPEM); err != nil {
			return nil, err
		}
	}
	if d.ca, err = tlsutil.LoadCA(d.caFile, caKey); err != nil {
		return nil, err
	}
	return d, nil
}

// cert returns the files of node's certificate of role, signing one when
// none is there yet.
func (d *devSecurity) cert(role tlsutil.Role, name string) (certFile, keyFile string, err error) {
	certName, keyName := tlsutil.CertFileNames(role, name, tlsutil.DefaultDomain)
	certFile, keyFile = filepath.Join(d.dir, certName), filepath.Join(d.dir, keyName)
	if _, err := os.Stat(certFile); err == nil {
		return certFile, keyFile, nil
	}
	certPEM, keyPEM, err := d.ca.Sign(tlsutil.CertRequest{Role: role, Node: name})
	if err != nil {
		return "", "", err
	}
	return certFile, keyFile, tlsutil.WritePair(certFile, certPEM, keyFile, keyPEM)
}

// apply gives a node the gossip key and its certificate: a server one for
// an orchestrator, a client one for a desktop.
func (d *devSecurity) apply(name string, orch bool, c *node.Config) error {
	role := tlsutil.RoleClient
	if orch {
		role = tlsutil.RoleServer
	}
	certFile, keyFile, err := d.cert(role, name)
	if err != nil {
		return fmt.Errorf("%s certificate: %w", name, err)
	}
	c.Gossip.EncryptKey = d.key
	c.TLS = node.TLSConfig{CAFile: d.caFile, CertFile: certFile, KeyFile: keyFile, Domain: tlsutil.DefaultDomain}
	return nil
}

// cliFiles are the CA and the CLI's client certificate and key.
func (d *devSecurity) cliFiles() (caFile, certFile, keyFile string, err error) {
	certFile, keyFile, err = d.cert(tlsutil.RoleClient, devCLIName)
	return d.caFile, certFile, keyFile, err
}
