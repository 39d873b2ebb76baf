package gossip

import (
	"bytes"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// ghostGuard keeps a crashed desktop from coming back to life on gossip
// alone.
//
// memberlist forgets a dead node GossipToTheDeadTime after it died (30 s).
// A node that was cut off when the crash happened may not have probed the
// dead one yet (each member is probed once per N probe periods) and still
// holds it alive. When the cut heals, that node's push-pull hands the dead
// node's old alive to members that have forgotten it, and they take it as a
// new member: the registry would see a crashed desktop online again and
// start its 90 s offline clock over (sim's fleet test found it).
//
// What tells the ghost from a desktop that really came back is the sample
// time in its tags (TagSampledAt): a desktop that runs again samples again
// before or as it gossips (a restart, a resume from sleep, the heartbeat
// that fires at once after a freeze), so its alive carries a sample newer
// than the one it had when it was declared dead; a ghost's sample is that
// old one or older. The guard remembers, for each member serf declared
// failed, the sample time of its last tags and, once memberlist has
// forgotten the member, vetoes (memberlist's AliveDelegate) any alive for
// that name whose sample is not newer, until
// an alive with a newer sample is accepted, the member is reaped, or
// window has passed since the death (a desktop whose sampler keeps failing
// gossips no new sample; after the window it is believed again). Members
// without a sample time (orchestrators that gossip none, older releases)
// are never vetoed.
//
// Before memberlist forgets a dead member, its incarnation number already
// tells a ghost (the incarnation it died with) from a refutation (a higher
// one), and the guard stays out of the way: a desktop declared dead by a
// short cut refutes at once, without waiting for its next sample. By the
// time memberlist has forgotten it (forgetAfter, GossipToTheDeadTime after
// the death) a desktop that was only cut off has heartbeated during the
// cut (the heartbeat interval is shorter than suspicion plus forget time).
type ghostGuard struct {
	window      time.Duration
	forgetAfter time.Duration
	now         func() time.Time

	mu   sync.Mutex
	dead map[string]tombstone // member name → its death
}

type tombstone struct {
	sampledAt float64 // TagSampledAt as gossiped (Unix seconds)
	at        time.Time
}

// newGhostGuard returns a guard for a memberlist that forgets dead members
// after forgetAfter (its GossipToTheDeadTime).
func newGhostGuard(window, forgetAfter time.Duration) *ghostGuard {
	return &ghostGuard{window: window, forgetAfter: forgetAfter, now: time.Now, dead: map[string]tombstone{}}
}

// errGhost is what memberlist logs when the guard vetoes an alive.
var errGhost = fmt.Errorf("stale alive for a member declared failed")

// NotifyAlive implements memberlist.AliveDelegate. It runs under
// memberlist's node lock for every alive message, so the common case (the
// name was not declared dead) is one map lookup.
func (g *ghostGuard) NotifyAlive(n *memberlist.Node) error {
	g.mu.Lock()
	ts, ok := g.dead[n.Name]
	age := g.now().Sub(ts.at)
	if ok && age >= g.window {
		delete(g.dead, n.Name)
		ok = false
	}
	g.mu.Unlock()
	// The death was recorded from serf's event, a moment after memberlist
	// marked it: three quarters of the forget time is safely before
	// memberlist forgets, and safely after any refutation it would judge.
	if !ok || age < g.forgetAfter*3/4 {
		return nil
	}
	sampled, have := metaSampledAt(n.Meta)
	if !have || sampled > ts.sampledAt {
		return nil
	}
	return fmt.Errorf("%w: its sample (ts %s) is no newer than when it was declared failed", errGhost,
		strconv.FormatFloat(sampled, 'f', 1, 64))
}

// HandleEvent implements the agent's EventHandler: it records deaths and
// forgets them once the member is alive again (with a newer sample, or the
// guard would have vetoed it), left or reaped.
func (g *ghostGuard) HandleEvent(ev serf.Event) {
	me, ok := ev.(serf.MemberEvent)
	if !ok {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range me.Members {
		switch me.Type {
		case serf.EventMemberFailed:
			if s, have := parseSampledAt(m.Tags[TagSampledAt]); have {
				g.dead[m.Name] = tombstone{sampledAt: s, at: g.now()}
			}
		case serf.EventMemberJoin, serf.EventMemberUpdate, serf.EventMemberLeave, serf.EventMemberReap:
			delete(g.dead, m.Name)
		}
	}
}

// metaSampledAt reads TagSampledAt from a member's encoded tags (serf's
// encoding: a magic byte, then a msgpack map).
func metaSampledAt(meta []byte) (float64, bool) {
	const serfTagMagic = 255
	if len(meta) == 0 || meta[0] != serfTagMagic {
		return 0, false
	}
	var tags map[string]string
	if err := codec.NewDecoder(bytes.NewReader(meta[1:]), &codec.MsgpackHandle{}).Decode(&tags); err != nil {
		return 0, false
	}
	return parseSampledAt(tags[TagSampledAt])
}

func parseSampledAt(v string) (float64, bool) {
	if v == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	return f, err == nil
}
