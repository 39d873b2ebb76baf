package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/hashicorp/go-sockaddr"

	"github.com/chiffon-dev/chiffon/api"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node/dispatch"
)

// APIConfig holds the HTTP API settings of orchestrators.
type APIConfig struct {
	// HTTPAddr is the address to serve the API on; a 0.0.0.0 host serves
	// every interface and advertises a private IP.
	HTTPAddr string
	// Token, when set, is required from every client (Bearer or
	// X-Chiffon-Token) and sent on node-to-node requests.
	Token string
	// EnableDebug serves Go's profiler (net/http/pprof) at /debug/pprof/,
	// behind the token like every other endpoint (-enable-debug, as in
	// Consul).
	EnableDebug bool
	// ReadyMaxLag is how many committed raft entries an orchestrator may
	// have left to apply and still answer GET /readyz 200
	// (-ready-max-lag); ReadyMaxStale how long a follower may go without
	// hearing from the leader while keeping up (-ready-max-stale). See
	// api.Config.
	ReadyMaxLag   int
	ReadyMaxStale time.Duration
}

// defaultAPIConfig is the API part of DefaultConfig.
func defaultAPIConfig() APIConfig {
	ac := api.DefaultConfig()
	return APIConfig{HTTPAddr: "127.0.0.1:8480", ReadyMaxLag: int(ac.ReadyMaxLag), ReadyMaxStale: ac.ReadyMaxStale}
}

func (c *APIConfig) validate() error {
	if err := checkAddr(c.HTTPAddr); err != nil || c.HTTPAddr == "" {
		return fmt.Errorf("%w: -http-addr: %q must be HOST:PORT, e.g. 127.0.0.1:8480", ErrInvalidConfig, c.HTTPAddr)
	}
	if c.ReadyMaxStale <= 0 {
		return fmt.Errorf("%w: -ready-max-stale: %s; must be a positive duration", ErrInvalidConfig, c.ReadyMaxStale)
	}
	if c.ReadyMaxLag < 0 {
		return fmt.Errorf("%w: -ready-max-lag: %d; must be 0 or more", ErrInvalidConfig, c.ReadyMaxLag)
	}
	return nil
}

// openAPI listens for the HTTP API and builds the server (it serves once
// gossip is up: the listener exists first so its address is in the tags).
func (n *Node) openAPI() error {
	c := n.cfg.API
	ln, err := net.Listen("tcp", c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen for http api on %s: %w", c.HTTPAddr, err)
	}
	ac := api.DefaultConfig()
	ac.Listener = ln
	ac.Registry = n.store.FSM()
	ac.Raft = n.store
	ac.LeaderHTTPAddr = n.apiAddrOf
	// The API answers reads as leader only once leadership is established
	// (the term's Barrier ran); it runs none of its own.
	ac.LeaderEstablished = n.lead.Established
	ac.RemovePeer = n.store.RemoveServer
	// A follower gives up on a leader that raft still follows but whose
	// API does not answer after the time raft itself gives a silent
	// leader (heartbeat timeout, randomised up to 2x), then retries.
	ac.ReadIndexTimeout = 2 * n.cfg.Orchestrator.RaftHeartbeatTimeout
	ac.Token = c.Token
	ac.FlapHalfLife = n.cfg.Orchestrator.Liveness.FlapHalfLife
	ac.ReadyMaxLag, ac.ReadyMaxStale = uint64(c.ReadyMaxLag), c.ReadyMaxStale
	ac.Reserved = func() map[string]api.Reservation {
		placed := n.store.FSM().WorkByStatus(consensus.WorkAssigned, consensus.WorkRunning)
		out := map[string]api.Reservation{}
		for id, r := range dispatch.Reserved(placed) {
			out[id] = api.Reservation(r) // the same fields: the build breaks if they part
		}
		return out
	}
	ac.Work = n.store.FSM()
	ac.Snapshots = n.store
	if c.EnableDebug {
		ac.Mounts = append(ac.Mounts, debugMount())
	}
	pushes := newPushCounter()
	ac.Mounts = append(ac.Mounts, n.telemetryMount(pushes))
	ac.Logger = n.cfg.Logger
	if t := n.cfg.TLS; t.Enabled() {
		if ac.TLS, err = api.ServerTLSConfig(t.CertFile, t.KeyFile, t.CAFile); err != nil {
			ln.Close()
			return err
		}
		if ac.ForwardTLS, err = api.ForwardTLSConfig(t.CAFile, t.CertFile, t.KeyFile); err != nil {
			ln.Close()
			return err
		}
		if n.tls != nil && n.tls.Roots != nil {
			// Forward only to a peer holding a server certificate of the
			// cluster CA, whatever address it advertises: every server
			// certificate names server.<domain>, which a desktop's cannot.
			ac.ForwardTLS.ServerName = "server." + n.tls.Domain
		}
	}
	srv, err := api.New(ac)
	if err != nil {
		ln.Close()
		return err
	}
	n.api = srv
	if err := srv.Registerer().Register(newGossipCollector(n)); err != nil {
		srv.Close()
		return fmt.Errorf("register gossip metrics: %w", err)
	}
	if err := srv.Registerer().Register(pushes); err != nil {
		srv.Close()
		return fmt.Errorf("register telemetry metrics: %w", err)
	}
	if err := srv.Registerer().Register(newTLSCollector(n)); err != nil {
		srv.Close()
		return fmt.Errorf("register TLS metrics: %w", err)
	}
	n.apiAddr = ln.Addr().String()
	if host, port, _ := net.SplitHostPort(n.apiAddr); net.ParseIP(host).IsUnspecified() {
		ip, err := sockaddr.GetPrivateIP()
		if err != nil || ip == "" {
			srv.Close()
			return fmt.Errorf("%w: -http-addr %s binds every interface and no private IP was found to advertise",
				ErrInvalidConfig, c.HTTPAddr)
		}
		n.apiAddr = net.JoinHostPort(ip, port)
	}
	return nil
}

// APIAddr is the advertised HTTP API address ("" on a desktop-only node).
func (n *Node) APIAddr() string { return n.apiAddr }

// apiAddrOf maps an orchestrator's agent_id (its raft ID) to its HTTP API
// address, from its gossip tags.
func (n *Node) apiAddrOf(agentID string) (string, error) {
	if agentID == n.agentID {
		return n.apiAddr, nil
	}
	for _, m := range n.gossip.Serf().Members() {
		info, err := gossip.DecodeTags(m.Tags)
		if err == nil && info.AgentID == agentID && info.APIAddr != "" {
			return info.APIAddr, nil
		}
	}
	return "", fmt.Errorf("no gossip member with agent_id %s and an API address", agentID)
}

// startAPI serves the API (after gossip started, so forwarding can resolve
// the leader's address).
func (n *Node) startAPI(ctx context.Context) error {
	if n.api == nil {
		return nil
	}
	return n.api.Start(ctx)
}

// debugMount serves net/http/pprof's handlers under /debug/pprof/.
func debugMount() api.Mount {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return api.Mount{Name: "debug", Patterns: []string{"/debug/pprof/"}, Methods: []string{http.MethodGet, http.MethodPost},
		Handler: mux}
}
