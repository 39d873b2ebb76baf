package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-sockaddr"

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
	Addr string
	// Concurrency and Timeout bound the handler's runs.
	Concurrency int
	Timeout     time.Duration
	// Bridge configures the RabbitMQ bridge run by the raft leader; an empty
	// AMQPURL turns it off.
	Bridge dispatch.Config
}

// DefaultWorkConfig returns the documented defaults.
func DefaultWorkConfig() WorkConfig {
	wc := worker.DefaultConfig()
	return WorkConfig{HandlerMode: wc.HandlerMode, Addr: "127.0.0.1:7380", Concurrency: wc.Concurrency,
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
		if err := checkAddr(c.Addr); err != nil || c.Addr == "" {
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
	wc.Logger = n.cfg.Logger // the runner adds component=work-runner
	r, err := worker.New(wc)
	if err != nil {
		return fmt.Errorf("work runner: %w", err)
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		r.Close()
		return fmt.Errorf("listen for work on %s: %w", c.Addr, err)
	}
	n.runner = r
	n.workAddr = ln.Addr().String()
	if host, port, _ := net.SplitHostPort(n.workAddr); net.ParseIP(host).IsUnspecified() {
		// Bound to every interface: advertise a private IP, as -http-addr does.
		ip, err := sockaddr.GetPrivateIP()
		if err != nil || ip == "" {
			ln.Close()
			r.Close()
			return fmt.Errorf("%w: -work-addr %s binds every interface and no private IP was found to advertise", ErrInvalidConfig, c.Addr)
		}
		n.workAddr = net.JoinHostPort(ip, port)
	}
	n.workSrv = &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := n.workSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.logger.Error("work endpoint stopped", "err", err)
		}
	}()
	n.logger.Info("taking work", "addr", n.workAddr, "handler", c.Handler, "handler-mode", wc.HandlerMode,
		"concurrency", c.Concurrency)
	return nil
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
	bc.Logger = n.cfg.Logger // the dispatcher adds component=dispatch
	return dispatch.New(bc, n.store)
}
