package telemetry

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/httpjson"
	"github.com/chiffon-dev/chiffon/internal/logging"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// maxBody bounds a push: serf's tags fit in memberlist's 512-byte node
// meta, so a few KB is plenty even as JSON.
const maxBody = 16 << 10

// Auth says how the orchestrator authenticates a push (see the package
// comment).
type Auth struct {
	// Roots is the cluster CA when the API requires client certificates:
	// the push's certificate must then name the node it pushes for
	// (<node>.client.<domain>, or <node>.server.<domain>).
	Roots  *x509.CertPool
	Domain string
	// Token: the API requires -http-token (checked before the handler).
	Token bool
	// GossipEncrypted reports whether gossip runs with -encrypt (nil:
	// not). Without Roots or Token a push would then be weaker than the
	// gossip it speeds up, so every push is refused (403) and desktops
	// stay on gossip alone.
	GossipEncrypted func() bool
}

// Authenticated reports whether pushes are authenticated (by certificate
// or token) rather than open to anyone who reaches the API.
func (a Auth) Authenticated() bool { return a.Roots != nil || a.Token }

// check returns 0 when r may push for node, else the status and why.
func (a Auth) check(r *http.Request, node string) (int, string) {
	switch {
	case a.Roots != nil:
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return http.StatusUnauthorized, "a telemetry push needs the node's client certificate (-tls-cert, -tls-key)"
		}
		if err := tlsutil.VerifyNode(r.TLS.PeerCertificates[0], node, a.Domain, a.Roots); err != nil {
			return http.StatusForbidden, fmt.Sprintf("certificate may not push for node %q: %v", node, err)
		}
	case a.Token:
	case a.GossipEncrypted != nil && a.GossipEncrypted():
		return http.StatusForbidden, "this cluster encrypts gossip but its API has neither a CA (-tls-ca) nor a token " +
			"(-http-token) to authenticate telemetry pushes; desktops report through gossip alone"
	}
	return 0, ""
}

// HandlerConfig configures Handler.
type HandlerConfig struct {
	Overlay *Overlay
	Auth    Auth
	// Leading reports whether this node is the established raft leader;
	// LeaderAddr the leader's HTTP address ("" while unknown).
	Leading    func() bool
	LeaderAddr func() string
	// Accepted is called after a push changed the overlay (the node wakes
	// its leader loop); it must not block.
	Accepted func()
	// Observe, if set, counts each push by result ("accepted",
	// "unchanged", "not_leader", "refused", "invalid", "full").
	Observe func(result string)
	Now     func() time.Time
	Logger  *slog.Logger
}

// Handler serves PUT Path on an orchestrator: 204 once the leader holds
// the tags, 421 (with HeaderLeader) on a follower, 400 for a body that is
// not a node's tags, 401/403 for a push the cluster cannot authenticate,
// 503 when the overlay is full.
type Handler struct {
	cfg HandlerConfig
	// refusals limits refusal logs to one a minute per node.
	refusals *logging.Limiter
}

// NewHandler returns the leader side's endpoint.
func NewHandler(cfg HandlerConfig) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Observe == nil {
		cfg.Observe = func(string) {}
	}
	return &Handler{cfg: cfg, refusals: logging.NewLimiter(time.Minute, 10_000, cfg.Now)}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	if node == "" {
		h.cfg.Observe("invalid")
		httpjson.Error(w, http.StatusBadRequest, "the path must name the node: PUT /v1/internal/telemetry/{node}")
		return
	}
	if code, msg := h.cfg.Auth.check(r, node); code != 0 {
		h.cfg.Observe("refused")
		h.warn(node, "refused a telemetry push", "node", node, "remote", r.RemoteAddr, "status", code, "reason", msg)
		httpjson.Error(w, code, msg)
		return
	}
	if !h.cfg.Leading() {
		h.cfg.Observe("not_leader")
		if addr := h.cfg.LeaderAddr(); addr != "" {
			w.Header().Set(HeaderLeader, addr)
		}
		httpjson.Error(w, http.StatusMisdirectedRequest, "this orchestrator is not the raft leader; push to the leader (header "+HeaderLeader+")")
		return
	}
	var rep Report
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		h.cfg.Observe("invalid")
		httpjson.Error(w, http.StatusBadRequest, fmt.Sprintf("body must be {\"tags\": {...}} of at most %d bytes: %v", maxBody, err))
		return
	}
	info, err := gossip.DecodeTags(rep.Tags)
	if err == nil && info.AgentID == "" {
		err = errors.New("no agent id (tag " + gossip.TagAgentID + ")")
	}
	if err != nil {
		h.cfg.Observe("invalid")
		httpjson.Error(w, http.StatusBadRequest, fmt.Sprintf("tags are not a chiffon node's: %v", err))
		return
	}
	changed, err := h.cfg.Overlay.Put(node, rep.Tags, h.cfg.Now())
	if err != nil {
		h.cfg.Observe("full")
		w.Header().Set("Retry-After", "30")
		httpjson.Error(w, http.StatusServiceUnavailable, err.Error()+"; the leader goes on with gossip's tags for this node")
		return
	}
	if changed {
		h.cfg.Observe("accepted")
		if h.cfg.Accepted != nil {
			h.cfg.Accepted()
		}
	} else {
		h.cfg.Observe("unchanged")
	}
	w.WriteHeader(http.StatusNoContent)
}

// warn logs a refusal at most once a minute per node (saying how many
// were held back since), so a misconfigured desktop (or someone probing)
// cannot flood the log.
func (h *Handler) warn(node, msg string, args ...any) {
	ok, held := h.refusals.Allow(node)
	if !ok {
		return
	}
	if held > 0 {
		args = append(args, "held_back", held)
	}
	h.cfg.Logger.Warn(msg, args...)
}
