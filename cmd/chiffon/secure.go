package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// Secure by default (issue 11): an orchestrator holds the registry and
// decides where work runs, so it refuses to start without a gossip key and
// TLS material unless -insecure says the operator means it. Desktops are
// not refused (see docs/SECURITY.md, "Desktops"): one without the gossip
// key cannot join an encrypted cluster at all, so refusing would protect
// nothing; what a desktop leaves open is warned about at every start.

// unprotected names what this node runs without protection, one phrase
// each, for the refusal and the start-up warning.
func (s *agentSettings) unprotected() []string {
	var out []string
	c := &s.cfg
	hasKey := c.Gossip.EncryptKey != ""
	if !hasKey {
		if fi, err := os.Stat(gossip.KeyringFile(c.DataDir)); err == nil && fi.Size() > 0 {
			hasKey = true
		}
	}
	if !hasKey {
		out = append(out, "gossip is not encrypted (no -encrypt key, no keyring in the data dir): anyone on the network reads the tags and can join")
	}
	orch := slices.Contains(s.roles, gossip.RoleOrchestrator)
	switch {
	case orch && !c.TLS.Enabled():
		out = append(out, "no TLS certificate (-tls-cert, -tls-key): the HTTP API is plain HTTP, open to anyone who reaches it")
	case orch && c.TLS.CAFile == "":
		out = append(out, "no cluster CA (-tls-ca): the HTTP API takes clients without a certificate")
	case !orch && c.Work.Handler != "" && !c.TLS.Enabled():
		out = append(out, "this desktop takes work without TLS (-tls-cert, -tls-key, -tls-ca): whoever reaches its work endpoint can run work here")
	}
	return out
}

// refusal is what an orchestrator without gossip key or TLS material
// prints before it exits 2: what is missing, and the two commands that
// make it, with the flags to start with.
func (s *agentSettings) refusal(missing []string) string {
	name := s.cfg.NodeName
	if name == "" {
		name, _ = os.Hostname()
	}
	if name == "" {
		name = "NAME"
	}
	domain := s.cfg.TLS.Domain
	dflag := ""
	if domain != "" && domain != tlsutil.DefaultDomain {
		dflag = " -domain " + shellQuote(domain)
	} else {
		domain = tlsutil.DefaultDomain
	}
	caFile, _ := tlsutil.CAFileNames(domain)
	certFile, keyFile := tlsutil.CertFileNames(tlsutil.RoleServer, name, domain)
	var b strings.Builder
	fmt.Fprintf(&b, "chiffon agent: refusing to start an orchestrator without a gossip key and TLS material:\n")
	for _, m := range missing {
		fmt.Fprintf(&b, "  - %s\n", m)
	}
	fmt.Fprintf(&b, `
Make them with two commands (once per cluster; 'tls cert create' again for each orchestrator):
  chiffon keygen > gossip.key
  chiffon tls ca create%s && chiffon tls cert create%s -server -node %s
then start it with:
  chiffon agent -role orchestrator -node %s -encrypt "$(cat gossip.key)" -tls-ca %s -tls-cert %s -tls-key %s ...
Give every node the same gossip key and %s (never the CA's key); desktops get
'chiffon tls cert create -client -node NAME'. See docs/SECURITY.md.
To run without them anyway, pass -insecure (logged as a warning at every start).`,
		dflag, dflag, shellQuote(name), shellQuote(name), caFile, certFile, keyFile, caFile)
	return b.String()
}
