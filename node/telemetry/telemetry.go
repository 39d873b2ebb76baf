// Package telemetry is a desktop's direct path to the raft leader: each
// time a desktop's tags change it also sends them, over the orchestrators'
// HTTP API, to the leader, which folds them into what it reads from
// gossip before it writes the registry.
//
// Why: gossip alone carries a tag change to the leader only as fast as
// memberlist's broadcast queues drain, and past a few hundred desktops on
// 30 s heartbeats those queues are full (docs/ARCHITECTURE.md, Scale): at
// 1,000 desktops a change took 39 s at p99 to reach the registry. Consul
// and Nomad have the same split: gossip for membership and failure
// detection, an RPC from each client agent to the servers for its state.
//
// What does not change: gossip stays the authority on liveness (serf says
// alive, failed or left; a push never makes a node online), and a pushed
// tag is the same hint a gossiped one is. The leader takes a pushed set
// only for the gossip member of that name carrying the same agent_id, and
// only while it is at least as new (the desktop's sample time, tag ts) as
// what gossip says; otherwise gossip's tags stand. A push is authenticated
// as much as the cluster allows (Handler): with a cluster CA the client
// certificate must name the node pushed for, with -http-token the token is
// required, and a cluster whose gossip is encrypted but has neither takes
// no pushes at all, since they would be weaker than its gossip.
//
// Reporter is the desktop's side, Handler and Overlay the leader's.
package telemetry

import (
	"errors"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/gossip"
)

// Path is the endpoint a desktop PUTs its tags to, on any orchestrator's
// HTTP API; {node} is the desktop's serf node name.
const Path = "/v1/internal/telemetry/{node}"

// HeaderLeader names, on a 421 from a follower, the HTTP address of the
// orchestrator that leads (when the follower knows it), so the reporter
// goes there next.
const HeaderLeader = "X-Chiffon-Leader-Addr"

// Report is the body of a push.
type Report struct {
	// Tags are the node's tags exactly as it gossips them.
	Tags map[string]string `json:"tags"`
}

// entry is one node's newest pushed tags.
type entry struct {
	tags    map[string]string
	agentID string
	ts      float64 // the tag ts, the desktop's sample time
	at      time.Time
}

// Overlay holds the newest tags pushed by each node, on an orchestrator.
// It is safe for concurrent use: the HTTP handler writes it, the leader's
// reconcile loop reads it.
type Overlay struct {
	mu  sync.Mutex
	m   map[string]entry
	max int
	ttl time.Duration
}

// ErrFull means the overlay holds as many nodes as it may; the push is
// answered 503 and the leader goes on with gossip's tags for that node.
var ErrFull = errors.New("telemetry overlay full")

// NewOverlay returns an overlay holding at most max nodes; an entry for a
// name that is no gossip member is dropped once it is older than ttl (a
// push may arrive before the leader hears of the join).
func NewOverlay(max int, ttl time.Duration) *Overlay {
	return &Overlay{m: map[string]entry{}, max: max, ttl: ttl}
}

// sampleTS is the tag ts as a number (0 when absent or unreadable).
func sampleTS(tags map[string]string) float64 {
	f, err := strconv.ParseFloat(tags[gossip.TagSampledAt], 64)
	if err != nil {
		return 0
	}
	return f
}

// Put records tags pushed for node at now, and reports whether they
// differ from those held. The newest push wins, whatever its ts: one
// desktop's reporter sends one push at a time, so a later push is a later
// state even when the desktop's clock stepped back.
func (o *Overlay) Put(node string, tags map[string]string, now time.Time) (bool, error) {
	e := entry{tags: maps.Clone(tags), agentID: tags[gossip.TagAgentID], ts: sampleTS(tags), at: now}
	o.mu.Lock()
	defer o.mu.Unlock()
	prev, ok := o.m[node]
	if ok && maps.Equal(prev.tags, e.tags) {
		o.m[node] = e // fresher receipt, same tags
		return false, nil
	}
	if !ok && len(o.m) >= o.max {
		return false, ErrFull
	}
	o.m[node] = e
	return true, nil
}

// Len is how many nodes the overlay holds.
func (o *Overlay) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.m)
}

// Merge gives members the pushed tags wherever they are at least as new
// as gossip's and carry the member's agent_id, and returns how many it
// replaced. It changes only the Tags field of the slice's elements (never
// a map serf holds) and forgets entries of names that are no member and
// older than the overlay's ttl.
func (o *Overlay) Merge(members []serf.Member, now time.Time) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.m) == 0 {
		return 0
	}
	replaced := 0
	present := make(map[string]bool, len(members))
	for i := range members {
		m := &members[i]
		present[m.Name] = true
		e, ok := o.m[m.Name]
		if !ok {
			continue
		}
		if e.agentID != m.Tags[gossip.TagAgentID] {
			// Another machine under this name, or a stale push from before
			// a data-dir reset: gossip's tags stand. The entry goes when
			// the member does, or is replaced by the next push.
			continue
		}
		if e.ts < sampleTS(m.Tags) {
			continue // gossip already carries a newer sample
		}
		m.Tags = e.tags
		replaced++
	}
	for name, e := range o.m {
		if !present[name] && now.Sub(e.at) > o.ttl {
			delete(o.m, name)
		}
	}
	return replaced
}

// Reset forgets every entry (leadership lost: the next leader starts from
// gossip and from what desktops push to it).
func (o *Overlay) Reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.m)
}
