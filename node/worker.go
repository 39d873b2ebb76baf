package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-sockaddr"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node/dispatch"
	"github.com/chiffon-dev/chiffon/node/worker"
)

// WorkConfig holds the work settings: the desktop's handler and the
// orchestrators' RabbitMQ bridge.
type WorkConfig struct {
	// Handler is the command a desktop runs for each work item (sh -c),
	// payload on stdin. Empty: this desktop takes no work.
	Handler string
	// HandlerMode is how Handler runs: worker.HandlerExec, a process per
	// item, or worker.HandlerPersistent, long-lived processes that take one
	// JSON line per item on stdin and answer with one on stdout.
	HandlerMode string
	// Addr is where a desktop with a handler takes assignments (HTTP).
	// Empty: the gossip bind IP with port DefaultWorkPort, advertised as
	// gossip is (the -advertise IP, else the bind IP, else for 0.0.0.0 a
	// private IP), so that a leader on another machine can reach it and
	// two desktops on one machine with their own -bind IPs do not clash.
	Addr string
	// Concurrency and Timeout bound the handler's runs.
	Concurrency int
	Timeout     time.Duration
	// Bridge configures the RabbitMQ bridge run by the raft leader; an empty
	// AMQPURL turns it off.
	Bridge dispatch.Config
}

// DefaultWorkPort is the port a desktop takes work on when WorkConfig.Addr
// is empty.
const DefaultWorkPort = 7380

// DefaultWorkConfig returns the documented defaults.
func DefaultWorkConfig() WorkConfig {
	wc := worker.DefaultConfig()
	return WorkConfig{HandlerMode: wc.HandlerMode, Concurrency: wc.Concurrency,
		Timeout: wc.Timeout, Bridge: dispatch.DefaultConfig()}
}

func (c *WorkConfig) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	if err := worker.CheckHandlerMode(c.HandlerMode); err != nil {
		return bad("%v", err)
	}
	if c.Handler != "" {
		if err := checkAddr(c.Addr); err != nil {
			return bad("-work-addr: %q must be HOST:PORT", c.Addr)
		}
		if c.Concurrency < 1 {
			return bad("-work-concurrency: %d; must be 1 or more", c.Concurrency)
		}
		if c.Timeout <= 0 {
			return bad("-work-timeout: %s; must be a positive duration", c.Timeout)
		}
	}
	if c.Bridge.PendingTimeout <= 0 {
		return bad("-work-pending-timeout: %s; must be a positive duration", c.Bridge.PendingTimeout)
	}
	if c.Bridge.Retention <= 0 {
		return bad("-work-retention: %s; must be a positive duration", c.Bridge.Retention)
	}
	if c.Bridge.RetentionMax < 0 {
		return bad("-work-retention-max: %d; must be 0 (no cap) or more", c.Bridge.RetentionMax)
	}
	if c.Bridge.Lease <= 0 {
		return bad("-work-lease: %s; must be a positive duration", c.Bridge.Lease)
	}
	if c.Bridge.UnreachableAfter <= 0 {
		return bad("-work-unreachable-after: %s; must be a positive duration", c.Bridge.UnreachableAfter)
	}
	if c.Bridge.MaxAttempts < 1 {
		return bad("-work-max-attempts: %d; must be 1 or more", c.Bridge.MaxAttempts)
	}
	if c.Bridge.WorkQueue == "" {
		return bad("-amqp-work-queue: empty")
	}
	return nil
}

// openWorker starts a desktop's work runner and its HTTP endpoint (before
// gossip, so the address is in the first tags).
func (n *Node) openWorker() error {
	c := n.cfg.Work
	wc := worker.DefaultConfig()
	wc.Handler, wc.HandlerMode, wc.Concurrency, wc.Timeout = c.Handler, c.HandlerMode, c.Concurrency, c.Timeout
	wc.Token = n.cfg.API.Token
	wc.TLS = n.tls           // HTTPS, and only orchestrators' server certificates deliver work
	wc.Logger = n.cfg.Logger // the runner adds component=work-runner
	r, err := worker.New(wc)
	if err != nil {
		return fmt.Errorf("work runner: %w", err)
	}
	listen, advHost := workAddrs(c.Addr, n.cfg.Gossip)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		r.Close()
		if c.Addr == "" {
			return fmt.Errorf("listen for work on %s (no -work-addr: the -bind IP, port %d): %w", listen, DefaultWorkPort, err)
		}
		return fmt.Errorf("listen for work on %s: %w", c.Addr, err)
	}
	n.runner = r
	n.workAddr = ln.Addr().String()
	if host, port, _ := net.SplitHostPort(n.workAddr); advHost != "" {
		n.workAddr = net.JoinHostPort(advHost, port)
	} else if net.ParseIP(host).IsUnspecified() {
		// Bound to every interface: advertise a private IP, as -http-addr does.
		ip, err := sockaddr.GetPrivateIP()
		if err != nil || ip == "" {
			ln.Close()
			r.Close()
			return fmt.Errorf("%w: -work-addr %s binds every interface and no private IP was found to advertise", ErrInvalidConfig, listen)
		}
		n.workAddr = net.JoinHostPort(ip, port)
	}
	if n.tls != nil {
		// Advertised with its scheme, so the leader dials HTTPS (gossip
		// tag wk=slots@https://host:port; docs/API.md).
		n.workAddr = worker.SchemeHTTPS + n.workAddr
	}
	n.workSrv = &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second,
		// TLS handshake failures (an untrusted certificate) are logged here,
		// with the remote address and the reason.
		ErrorLog: slog.NewLogLogger(n.logger.With("component", "work-endpoint").Handler(), slog.LevelWarn)}
	wln := r.Listener(ln)
	go func() {
		if err := n.workSrv.Serve(wln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.logger.Error("work endpoint stopped", "err", err)
		}
	}()
	n.logger.Info("taking work", "addr", n.workAddr, "handler", c.Handler, "handler-mode", wc.HandlerMode,
		"concurrency", c.Concurrency, "tls", n.tls != nil)
	if n.tls == nil {
		guard := "anyone who can reach it can run the handler"
		if wc.Token != "" {
			guard = "only the bearer token (-http-token) guards it, in clear text"
		}
		n.logger.Warn("the work endpoint is unauthenticated: no TLS material (-tls-cert, -tls-key, -tls-ca), so "+guard,
			"addr", n.workAddr)
	}
	return nil
}

// workAddrs returns where a desktop listens for work and the host it
// advertises ("": the listening address, or a private IP if that is
// unspecified). Without an addr the work endpoint follows gossip: it listens
// on the -bind IP (0.0.0.0 when -bind gives none) with port DefaultWorkPort
// and is advertised with the -advertise IP when one is set. So a desktop
// bound to loopback takes work on loopback, and one bound to its LAN
// address or to every interface is reachable from the leader on another
// machine. A given addr is used as it is; only if it is on every interface
// does -advertise name the host.
func workAddrs(addr string, g gossip.Config) (listen, advertiseHost string) {
	adv, _, err := net.SplitHostPort(g.AdvertiseAddr)
	if err != nil {
		adv = ""
	}
	if addr == "" {
		host, _, err := net.SplitHostPort(g.BindAddr)
		if err != nil || host == "" {
			host = "0.0.0.0"
		}
		return net.JoinHostPort(host, strconv.Itoa(DefaultWorkPort)), adv
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err == nil && (host == "" || ip != nil && ip.IsUnspecified()) {
		return addr, adv
	}
	return addr, ""
}

// closeWorker stops taking work: the endpoint first, then the runner.
func (n *Node) closeWorker() error {
	if n.workSrv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := n.workSrv.Shutdown(ctx)
	return errors.Join(err, n.runner.Close())
}

// newDispatcher builds the bridge the leader runs. It never returns a nil
// Dispatcher without an error: with no AMQP URL the Dispatcher is still
// built, and its Run logs once that the bridge is off and waits for the
// end of the term.
func (n *Node) newDispatcher() (*dispatch.Dispatcher, error) {
	bc := n.cfg.Work.Bridge
	bc.Token = n.cfg.API.Token
	bc.FlapHalfLife = n.cfg.Orchestrator.Liveness.FlapHalfLife
	bc.Supports = n.serversSupport
	bc.TLS = n.tls           // for desktops that advertise https://
	bc.Logger = n.cfg.Logger // the dispatcher adds component=dispatch
	return dispatch.New(bc, n.store)
}
