package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// Voter admission. Gossip tags are hints, never credentials: a member whose
// tags say role=orchestrator with a raft address is only a candidate. The
// leader makes it a voter after proving, over the raft TLS listener at that
// address, that it holds a CA-signed server certificate for the member's
// node name (tlsutil.VerifyServer), as Consul's verify_server_hostname
// does. Without TLS (insecure mode) it can only check that the address
// answers raft (Store.ProbePeer), and says once that membership is
// trusted from gossip.
//
// A verdict is kept per (agent id, raft address): an admitted candidate is
// not dialled again, a refused one is retried after a backoff that doubles
// from voterRetryMin to voterRetryMax, so a rogue costs one dial per
// backoff and one Warn line per distinct reason.
const (
	voterRetryMin = 5 * time.Second
	voterRetryMax = 2 * time.Minute
	// voterDialTimeout bounds one admission dial and handshake; the
	// reconcile round waits for it.
	voterDialTimeout = 3 * time.Second
)

// ErrNoServerCert means the peer at a candidate's raft address completed
// no TLS handshake that shows a server certificate.
var ErrNoServerCert = errors.New("no server certificate at the raft address")

// voterCheck proves that the member named name really is an orchestrator
// at raft address addr; nil means admit.
type voterCheck func(name, addr string) error

// tlsVoterCheck dials addr over TLS with this node's certificate and
// requires the peer's certificate to be a server certificate for name.
func tlsVoterCheck(b *tlsutil.Bundle) voterCheck {
	return func(name, addr string) error {
		cfg := b.ClientConfig(tlsutil.ServerName(name, b.Domain))
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: voterDialTimeout}, "tcp", addr, cfg)
		if err != nil {
			return fmt.Errorf("%w: TLS handshake with %s: %v", ErrNoServerCert, addr, err)
		}
		defer conn.Close()
		certs := conn.ConnectionState().PeerCertificates
		if len(certs) == 0 {
			return fmt.Errorf("%w: %s presented none", ErrNoServerCert, addr)
		}
		return tlsutil.VerifyServer(certs[0], name, b.Domain, b.Roots)
	}
}

// voterKey identifies a candidate: a new address is a new candidate.
type voterKey struct{ id, addr string }

// verdict is the cached result of checking one candidate.
type verdict struct {
	err     error         // nil: admitted
	next    time.Time     // refused: when to check again
	backoff time.Duration // refused: the current retry delay
	logged  string        // the last reason logged
}

// admit reports whether the candidate may become a voter, checking it at
// most once per backoff.
func (r *reconciler) admit(name, id, addr string, now time.Time) bool {
	k := voterKey{id, addr}
	v := r.verdicts[k]
	if v != nil && (v.err == nil || now.Before(v.next)) {
		return v.err == nil
	}
	if v == nil {
		v = &verdict{}
		r.verdicts[k] = v
	}
	v.err = r.checkVoter(name, id, addr)
	if v.err == nil {
		r.logger.Info("verified raft voter candidate", "id", id, "member", name, "addr", addr, "tls", r.verify != nil)
		return true
	}
	v.backoff = min(max(2*v.backoff, voterRetryMin), voterRetryMax)
	v.next = now.Add(v.backoff)
	if msg := v.err.Error(); msg != v.logged {
		v.logged = msg
		r.logger.Warn("refusing raft voter: gossip says orchestrator, but it could not prove it",
			"id", id, "member", name, "addr", addr, "err", v.err, "retry-in", v.backoff)
	}
	return false
}

// checkVoter runs the TLS check, or without TLS the raft probe.
func (r *reconciler) checkVoter(name, id, addr string) error {
	if r.verify != nil {
		return r.verify(name, addr)
	}
	if !r.trustLogged {
		r.trustLogged = true
		r.logger.Warn("raft membership is trusted from gossip (no TLS): a candidate voter is only checked to answer raft at its address")
	}
	return r.store.ProbePeer(id, addr)
}

// pruneVerdicts forgets candidates that are no longer in the pool.
func (r *reconciler) pruneVerdicts(seen map[voterKey]bool) {
	for k := range r.verdicts {
		if !seen[k] {
			delete(r.verdicts, k)
		}
	}
}

// reconcileRoles removes, after VoterRoleGrace, a voter whose gossip
// member stopped saying orchestrator or is gone from the pool, logging it
// at once. The leader itself is never removed this way, and at most one
// server per round. orch holds the ids whose member claims the
// orchestrator role; present every id with a member.
func (r *reconciler) reconcileRoles(servers []consensus.Server, orch, present map[string]bool, now time.Time) error {
	voters := 0
	for _, s := range servers {
		if s.Voter {
			voters++
		}
	}
	var removed bool
	var errs []error
	for _, s := range servers {
		if s.ID == r.store.ID() || orch[s.ID] {
			if _, ok := r.roleLost[s.ID]; ok && orch[s.ID] {
				r.logger.Info("raft server's gossip role says orchestrator again", "id", s.ID)
			}
			delete(r.roleLost, s.ID)
			continue
		}
		reason := "its gossip member no longer has the orchestrator role"
		if !present[s.ID] {
			reason = "it has no gossip member"
		}
		since, ok := r.roleLost[s.ID]
		if !ok {
			r.roleLost[s.ID] = now
			r.logger.Warn("raft server is not an orchestrator in gossip; removing it after the grace unless that changes",
				"id", s.ID, "addr", s.Address, "reason", reason, "grace", r.cfg.VoterRoleGrace)
			continue
		}
		if removed || now.Sub(since) < r.cfg.VoterRoleGrace {
			continue
		}
		left := voters
		if s.Voter {
			left--
		}
		if left < 3 {
			r.logger.Warn("removing a raft voter leaves fewer than 3: the cluster will not survive losing another",
				"id", s.ID, "voters-left", left, "why", reason)
		}
		r.logger.Warn("removing raft server that is not an orchestrator in gossip", "id", s.ID, "addr", s.Address,
			"reason", reason, "since", since)
		if err := r.store.RemoveServer(s.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(r.roleLost, s.ID)
		removed = true
	}
	for id := range r.roleLost {
		if !containsServer(servers, id) {
			delete(r.roleLost, id)
		}
	}
	return errors.Join(errs...)
}

func containsServer(servers []consensus.Server, id string) bool {
	for _, s := range servers {
		if s.ID == id {
			return true
		}
	}
	return false
}
