package gossip

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/serf/client"
	"github.com/hashicorp/serf/serf"
)

// Local commands let the CLI on a node's machine tell that node something
// about itself (`chiffon owner active`, `chiffon power suspend`), through
// the serf agent RPC it already serves for `serf members` and guards with
// the RPC token. A command is a serf query named localQueryPrefix+name,
// filtered to the node's own name: serf runs a query on its sender too, so
// the node that the CLI asked is the node that answers, and every other
// member drops it (the filter does not match). The node also refuses a
// query that did not come from itself: a local command is never taken
// from another member.

// localQueryPrefix starts the serf query name of every local command.
const localQueryPrefix = "chiffon-local:"

// Errors of local commands.
var (
	// ErrUnknownCommand means the node has no handler for the command
	// (an older build, or a role that does not take it).
	ErrUnknownCommand = errors.New("the node does not know this command")
	// ErrNoAnswer means the node did not answer in time.
	ErrNoAnswer = errors.New("no answer from the node")
)

// LocalFunc runs a local command and returns the answer (at most about
// 1 KB: serf's query response limit) or an error, whose text the CLI shows.
// It runs on its own goroutine, never on serf's event loop, and should
// return within a few seconds.
type LocalFunc func(payload []byte) ([]byte, error)

// localCommands is the node's table of local commands.
type localCommands struct {
	mu sync.Mutex
	fn map[string]LocalFunc
}

// HandleLocal makes the node answer the local command name with fn. A
// second call for the same name replaces the first. It may be called
// before or after Start.
func (g *Gossip) HandleLocal(name string, fn LocalFunc) {
	g.local.mu.Lock()
	defer g.local.mu.Unlock()
	if g.local.fn == nil {
		g.local.fn = map[string]LocalFunc{}
	}
	g.local.fn[name] = fn
}

// Answers start with one status byte.
const (
	localOK    = 'o'
	localError = 'e'
)

// localDispatcher is the serf event handler that answers local commands.
type localDispatcher struct{ g *Gossip }

func (d localDispatcher) HandleEvent(ev serf.Event) {
	q, ok := ev.(*serf.Query)
	if !ok || !strings.HasPrefix(q.Name, localQueryPrefix) {
		return
	}
	g := d.g
	self := g.cfg.NodeName
	if g.agent != nil {
		self = g.agent.Serf().LocalMember().Name
	}
	name := strings.TrimPrefix(q.Name, localQueryPrefix)
	if src := q.SourceNode(); src != self {
		g.logger.Warn("refused a local command sent by another member", "command", name, "from", src)
		return
	}
	g.local.mu.Lock()
	fn := g.local.fn[name]
	g.local.mu.Unlock()
	payload := append([]byte(nil), q.Payload...)
	// Never block serf's event loop: run the command on its own goroutine,
	// owned by the Gossip (Close waits for it).
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		var answer []byte
		if fn == nil {
			answer = append([]byte{localError}, fmt.Sprintf("unknown command %q", name)...)
		} else if out, err := fn(payload); err != nil {
			answer = append([]byte{localError}, err.Error()...)
		} else {
			answer = append([]byte{localOK}, out...)
		}
		if err := q.Respond(answer); err != nil {
			g.logger.Warn("could not answer a local command", "command", name, "error", err)
		}
	}()
}

// LocalCommand sends the local command name with payload to the node whose
// serf agent RPC is at rpcAddr (token rpcAuth, "" if it has none) and
// returns its answer. It waits until ctx is done, or 10 s without a
// deadline.
func LocalCommand(ctx context.Context, rpcAddr, rpcAuth, name string, payload []byte) ([]byte, error) {
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("%s: %w", name, context.DeadlineExceeded)
	}
	c, err := client.ClientFromConfig(&client.Config{Addr: rpcAddr, AuthKey: rpcAuth, Timeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("serf RPC at %s: %w", rpcAddr, err)
	}
	defer c.Close()
	stats, err := c.Stats()
	if err != nil {
		return nil, fmt.Errorf("serf RPC at %s: %w", rpcAddr, err)
	}
	self := stats["agent"]["name"]
	if self == "" {
		return nil, fmt.Errorf("serf RPC at %s: it did not say its node name", rpcAddr)
	}
	respCh := make(chan client.NodeResponse, 4)
	err = c.Query(&client.QueryParam{
		FilterNodes: []string{self},
		Name:        localQueryPrefix + name,
		Payload:     payload,
		Timeout:     timeout,
		RespCh:      respCh,
	})
	if err != nil {
		return nil, fmt.Errorf("send %s to %s: %w", name, self, err)
	}
	for {
		select {
		case r, ok := <-respCh:
			if !ok {
				return nil, fmt.Errorf("%s: %w %s within %v (an older chiffon?)", name, ErrNoAnswer, self, timeout.Round(time.Millisecond))
			}
			if r.From != self {
				continue
			}
			if len(r.Payload) == 0 {
				return nil, fmt.Errorf("%s: empty answer from %s", name, self)
			}
			switch body := r.Payload[1:]; r.Payload[0] {
			case localOK:
				return body, nil
			case localError:
				if strings.HasPrefix(string(body), "unknown command") {
					return nil, fmt.Errorf("%s: %w (%s)", name, ErrUnknownCommand, body)
				}
				return nil, fmt.Errorf("%s: %s", name, body)
			default:
				return nil, fmt.Errorf("%s: malformed answer from %s", name, self)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", name, ctx.Err())
		}
	}
}
