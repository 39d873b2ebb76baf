package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// tlsCommand only groups the tls subcommands.
type tlsCommand struct{ ui cli.Ui }

func (c *tlsCommand) Synopsis() string { return "Make the cluster's CA and certificates" }
func (c *tlsCommand) Help() string {
	return `Usage: chiffon tls <subcommand> [options]

  Makes a cluster certificate authority and the certificates it signs, as
  'consul tls' does. Subcommands:

    ca create       make the CA: <domain>-agent-ca.pem and its key
    cert create     make a server (orchestrator) or client (desktop) certificate`
}
func (c *tlsCommand) Run(args []string) int { return groupRun(c.ui, "tls", args) }

// tlsCACommand only groups `tls ca create`.
type tlsCACommand struct{ ui cli.Ui }

func (c *tlsCACommand) Synopsis() string { return "Make the cluster's certificate authority" }
func (c *tlsCACommand) Help() string     { return `Usage: chiffon tls ca create [options]` }
func (c *tlsCACommand) Run(args []string) int {
	return groupRun(c.ui, "tls ca", args)
}

// tlsCertCommand only groups `tls cert create`.
type tlsCertCommand struct{ ui cli.Ui }

func (c *tlsCertCommand) Synopsis() string { return "Make certificates signed by the cluster's CA" }
func (c *tlsCertCommand) Help() string {
	return `Usage: chiffon tls cert create -server|-client -node NAME [options]`
}
func (c *tlsCertCommand) Run(args []string) int {
	return groupRun(c.ui, "tls cert", args)
}

// tlsCACreateCommand is `chiffon tls ca create`.
type tlsCACreateCommand struct{ ui cli.Ui }

type tlsCASettings struct {
	days           int
	domain, outDir string
}

func (s *tlsCASettings) options() *options {
	*s = tlsCASettings{days: tlsutil.DefaultCADays, domain: tlsutil.DefaultDomain, outDir: "."}
	o := &options{}
	o.integer(&s.days, "days", "days the CA is valid")
	o.str(&s.domain, "domain", "domain of the role names (server.<domain>, client.<domain>) and of the file names")
	o.str(&s.outDir, "out-dir", "directory to write the files to")
	return o
}

func (c *tlsCACreateCommand) Synopsis() string { return "Make the cluster's certificate authority" }

func (c *tlsCACreateCommand) Help() string {
	var s tlsCASettings
	return `Usage: chiffon tls ca create [options]

  Makes a new certificate authority (ECDSA P-256) and writes
  <domain>-agent-ca.pem (give it to every node as -tls-ca) and
  <domain>-agent-ca-key.pem (mode 0600; keep it off the nodes: it signs
  certificates with 'chiffon tls cert create'). Existing files are never
  replaced.

Options:

` + s.options().help()
}

func (c *tlsCACreateCommand) Run(args []string) int {
	var s tlsCASettings
	_, code, done := parseTLS(c.ui, "tls ca create", s.options(), args, func(rest []string) error {
		if len(rest) > 0 {
			return fmt.Errorf("unexpected arguments %q", rest)
		}
		if s.days < 1 {
			return fmt.Errorf("-days must be at least 1")
		}
		return nil
	})
	if done {
		return code
	}
	certPEM, keyPEM, err := tlsutil.GenerateCA(s.domain, s.days)
	if err != nil {
		c.ui.Error("chiffon tls ca create: " + err.Error())
		return 2
	}
	certName, keyName := tlsutil.CAFileNames(s.domain)
	return writePair(c.ui, "tls ca create", s.outDir, certName, certPEM, keyName, keyPEM)
}

// tlsCertCreateCommand is `chiffon tls cert create`.
type tlsCertCreateCommand struct{ ui cli.Ui }

type tlsCertSettings struct {
	server, client          bool
	node, caFile, keyFile   string
	days                    int
	domain, outDir          string
	extraIPs, extraDNSNames []string
}

func (s *tlsCertSettings) options() *options {
	*s = tlsCertSettings{days: tlsutil.DefaultCertDays, domain: tlsutil.DefaultDomain, outDir: "."}
	o := &options{}
	o.boolean(&s.server, "server", "a server certificate: for an orchestrator")
	o.boolean(&s.client, "client", "a client certificate: for a desktop or a CLI user")
	o.str(&s.node, "node", "the node's name, as its agent's -node (e.g. orch-1)")
	o.str(&s.caFile, "ca", "the CA certificate (default <out-dir>/<domain>-agent-ca.pem)")
	o.str(&s.keyFile, "key", "the CA key (default <out-dir>/<domain>-agent-ca-key.pem)")
	o.integer(&s.days, "days", "days the certificate is valid")
	o.str(&s.domain, "domain", "domain of the role names; the CA's -domain")
	o.strList(&s.extraIPs, "additional-ipaddress", "another IP address the certificate is valid for, e.g. the node's advertised address")
	o.strList(&s.extraDNSNames, "additional-dnsname", "another DNS name the certificate is valid for")
	o.str(&s.outDir, "out-dir", "directory to write the files to")
	return o
}

func (c *tlsCertCreateCommand) Synopsis() string { return "Make a server or client certificate" }

func (c *tlsCertCreateCommand) Help() string {
	var s tlsCertSettings
	return `Usage: chiffon tls cert create -server|-client -node NAME [options]

  Makes a certificate signed by the CA ('chiffon tls ca create') and writes
  <domain>-server-NAME.pem and <domain>-server-NAME-key.pem (mode 0600), or
  <domain>-client-NAME*.pem with -client. A server certificate names
  server.<domain> and NAME.server.<domain>, names a client certificate can
  never carry: that is how a peer tells an orchestrator from a desktop.
  Every certificate is also valid for localhost and 127.0.0.1; add the
  node's advertised address with -additional-ipaddress. Existing files are
  never replaced.

Options:

` + s.options().help()
}

func (c *tlsCertCreateCommand) Run(args []string) int {
	var s tlsCertSettings
	var role tlsutil.Role
	var ips []net.IP
	_, code, done := parseTLS(c.ui, "tls cert create", s.options(), args, func(rest []string) error {
		if len(rest) > 0 {
			return fmt.Errorf("unexpected arguments %q; give the node name with -node", rest)
		}
		switch {
		case s.server == s.client:
			return fmt.Errorf("give exactly one of -server (an orchestrator) or -client (a desktop)")
		case s.server:
			role = tlsutil.RoleServer
		default:
			role = tlsutil.RoleClient
		}
		if s.node == "" {
			return fmt.Errorf("-node NAME is required (the node's agent -node, e.g. orch-1)")
		}
		if s.days < 1 {
			return fmt.Errorf("-days must be at least 1")
		}
		for _, v := range s.extraIPs {
			ip := net.ParseIP(v)
			if ip == nil {
				return fmt.Errorf("-additional-ipaddress %q is not an IP address", v)
			}
			ips = append(ips, ip)
		}
		return nil
	})
	if done {
		return code
	}
	caName, caKeyName := tlsutil.CAFileNames(s.domain)
	if s.caFile == "" {
		s.caFile = filepath.Join(s.outDir, caName)
	}
	if s.keyFile == "" {
		s.keyFile = filepath.Join(s.outDir, caKeyName)
	}
	ca, err := tlsutil.LoadCA(s.caFile, s.keyFile)
	if err != nil {
		c.ui.Error("chiffon tls cert create: " + err.Error() + "\n(make a CA with 'chiffon tls ca create', or give -ca and -key)")
		return 1
	}
	certPEM, keyPEM, err := ca.Sign(tlsutil.CertRequest{
		Role: role, Node: s.node, Domain: s.domain, Days: s.days, IPs: ips, DNSNames: s.extraDNSNames,
	})
	if err != nil {
		c.ui.Error("chiffon tls cert create: " + err.Error())
		return 2
	}
	certName, keyName := tlsutil.CertFileNames(role, s.node, s.domain)
	return writePair(c.ui, "tls cert create", s.outDir, certName, certPEM, keyName, keyPEM)
}

// parseTLS is parseCommon that also names the allowed flags after an
// unknown flag or a bad combination: these commands are run rarely, and
// from memory of Consul's.
func parseTLS(ui cli.Ui, name string, o *options, args []string, check func(rest []string) error) (rest []string, code int, done bool) {
	rest, err := o.parse(name, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, 0, true
	}
	if err == nil {
		err = check(rest)
	}
	if err != nil {
		ui.Error(fmt.Sprintf("chiffon %s: %s\nallowed flags: -%s", name, strings.TrimPrefix(err.Error(), "usage: "),
			strings.ReplaceAll(o.names(), ", ", ", -")))
		return nil, 2, true
	}
	return rest, 0, false
}

// writePair writes a certificate and its key into dir and says so.
func writePair(ui cli.Ui, cmd, dir, certName string, certPEM []byte, keyName string, keyPEM []byte) int {
	certFile, keyFile := filepath.Join(dir, certName), filepath.Join(dir, keyName)
	if err := tlsutil.WritePair(certFile, certPEM, keyFile, keyPEM); err != nil {
		ui.Error("chiffon " + cmd + ": " + strings.TrimSpace(err.Error()))
		return 1
	}
	ui.Output("==> Saved " + certFile)
	ui.Output("==> Saved " + keyFile)
	return 0
}
