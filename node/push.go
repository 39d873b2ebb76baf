package node

import (
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/serf/serf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chiffon-dev/chiffon/api"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node/telemetry"
)

// Telemetry pushes (node/telemetry): a desktop sends each tag change
// straight to the raft leader as well as gossiping it; the leader folds
// the newest push into its view of the gossip pool.
const (
	// pushTimeout bounds one push; the reporter then tries the next
	// orchestrator and backs off.
	pushTimeout = 10 * time.Second
	// overlayMax bounds the nodes the leader holds pushes for.
	overlayMax = 100_000
	// overlayTTL is how long the leader keeps a push from a node gossip
	// has not shown it (a push can beat the join's gossip).
	overlayTTL = 5 * time.Minute
)

// openReporter starts a desktop's reporter (before gossip: gossip calls
// Offer from UpdateInfo). The targets come from gossip once it runs.
func (n *Node) openReporter() {
	if !n.hasRole(gossip.RoleDesktop) || !n.cfg.PushTelemetry {
		return
	}
	name := n.cfg.NodeName
	if name == "" {
		name, _ = os.Hostname() // as gossip names the node
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	tr.IdleConnTimeout = 2 * n.cfg.HeartbeatInterval
	if n.tls != nil {
		// Only an orchestrator's server certificate passes, whatever the
		// address gossip advertised (tlsutil.Bundle.ClientConfig); the
		// node's own client certificate names it to the leader.
		tr.TLSClientConfig = n.tls.ClientConfig("server." + n.tls.Domain)
	}
	n.reporter = telemetry.NewReporter(telemetry.ReporterConfig{
		Node:        name,
		Targets:     n.pushTargets,
		Client:      &http.Client{Transport: tr, Timeout: pushTimeout},
		HTTPS:       n.tls != nil,
		Token:       n.cfg.API.Token,
		MinBackoff:  time.Second,
		MaxBackoff:  telemetry.RetryMax(n.cfg.HeartbeatInterval),
		RefusedWait: max(n.cfg.HeartbeatInterval, time.Second),
		Logger:      n.cfg.Logger.With("component", "telemetry"),
	})
}

// pushTargets lists the alive orchestrators serving the HTTP API.
func (n *Node) pushTargets() []telemetry.Target {
	n.pubMu.Lock()
	g := n.gossip
	n.pubMu.Unlock()
	if g == nil {
		return nil
	}
	var out []telemetry.Target
	for _, m := range g.Serf().Members() {
		if m.Status != serf.StatusAlive {
			continue
		}
		info, err := gossip.DecodeTags(m.Tags)
		if err == nil && info.HasRole(gossip.RoleOrchestrator) && info.APIAddr != "" {
			out = append(out, telemetry.Target{Name: m.Name, Addr: info.APIAddr})
		}
	}
	return out
}

func (n *Node) closeReporter() {
	if n.reporter != nil {
		n.reporter.Close()
	}
}

// telemetryMount is an orchestrator's side: PUT /v1/internal/telemetry/{node}.
func (n *Node) telemetryMount(pushes *prometheus.CounterVec) api.Mount {
	n.overlay = telemetry.NewOverlay(overlayMax, overlayTTL)
	auth := telemetry.Auth{Domain: n.cfg.TLS.Domain, Token: n.cfg.API.Token != ""}
	if n.tls != nil && n.cfg.TLS.CAFile != "" {
		auth.Roots = n.tls.Roots // the API requires client certificates
	}
	auth.GossipEncrypted = func() bool {
		n.pubMu.Lock()
		g := n.gossip
		n.pubMu.Unlock()
		return n.cfg.Gossip.EncryptKey != "" || (g != nil && g.Serf().EncryptionEnabled())
	}
	h := telemetry.NewHandler(telemetry.HandlerConfig{
		Overlay:    n.overlay,
		Auth:       auth,
		Leading:    func() bool { return n.store.IsLeader() && n.lead.Established() },
		LeaderAddr: n.cachedLeaderAddr(),
		Accepted:   n.wakeLeader,
		Observe:    func(result string) { pushes.WithLabelValues(result).Inc() },
		Logger:     n.cfg.Logger.With("component", "telemetry"),
	})
	return api.Mount{Name: "internal_telemetry", Patterns: []string{telemetry.Path}, Methods: []string{http.MethodPut}, Handler: h}
}

// cachedLeaderAddr maps raft's leader to its HTTP address for the 421s
// a follower answers, resolving it from gossip once per leader: after an
// election every desktop's next push may land on a follower, and each
// resolution decodes every member's tags.
func (n *Node) cachedLeaderAddr() func() string {
	type known struct{ id, addr string }
	var last atomic.Pointer[known]
	return func() string {
		id, _ := n.store.Leader()
		if id == "" {
			return ""
		}
		if k := last.Load(); k != nil && k.id == id {
			return k.addr
		}
		addr, err := n.apiAddrOf(id)
		if err != nil {
			return ""
		}
		last.Store(&known{id, addr})
		return addr
	}
}

// newPushCounter counts telemetry pushes by result on an orchestrator.
func newPushCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chiffon_telemetry_pushes_total",
		Help: "Telemetry pushes from desktops by result: accepted, unchanged, not_leader, refused, invalid, full.",
	}, []string{"result"})
}
