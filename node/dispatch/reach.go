package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/node/worker"
)

// reachability is what the leader's calls to the desktops' work endpoints
// say of each desktop: gossip may keep a desktop online through other
// members' indirect probes while the orchestrators cannot reach it.
// Trackers report every call; runReach turns a streak of failures of
// UnreachableAfter into a registry mark, and probes marked desktops until
// they answer. It lives only while the node leads (Run resets it).
type reachability struct {
	mu sync.Mutex
	// streaks is the current failure streak by agent ID; guarded by mu.
	streaks map[string]streak
}

// streak is a run of failed calls with no answer in between.
type streak struct {
	first time.Time // when the first failed call of the streak started
	last  time.Time // when the latest failed call ended
}

func newReachability() *reachability { return &reachability{streaks: map[string]streak{}} }

func (r *reachability) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.streaks)
}

// answered records an HTTP answer from the agent: its streak ends.
func (r *reachability) answered(agent string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.streaks, agent)
}

// failed records a call to the agent that started at start and failed at
// end without an answer. A streak whose last failure is older than window
// (no call since) starts afresh: an old, lone failure is not a streak.
func (r *reachability) failed(agent string, start, end time.Time, window time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.streaks[agent]
	if !ok || end.Sub(s.last) > window {
		s.first = start
	}
	s.last = end
	r.streaks[agent] = s
}

// due returns, by agent, the start of each streak that has lasted at least
// after by now and is still going (a failure within after).
func (r *reachability) due(now time.Time, after time.Duration) map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]time.Time{}
	for agent, s := range r.streaks {
		if now.Sub(s.first) >= after && now.Sub(s.last) < after {
			out[agent] = s.first
		}
	}
	return out
}

// probeInterval is how often the leader probes a desktop marked
// unreachable: a sixth of UnreachableAfter (5 s by default), at least
// 10 ms.
func (d *Dispatcher) probeInterval() time.Duration {
	return max(d.cfg.UnreachableAfter/6, 10*time.Millisecond)
}

// runReach marks desktops unreachable once their calls have failed for
// UnreachableAfter (the planner then places their work elsewhere, and
// placement skips them), and probes every marked desktop each
// probeInterval with GET /v1/work: its first answer clears the mark, and
// the attempts it lists that the registry has moved on from are dropped.
func (d *Dispatcher) runReach(ctx context.Context) {
	fsm := d.store.FSM()
	tick := time.NewTicker(max(min(d.probeInterval(), time.Second)/2, 5*time.Millisecond))
	defer tick.Stop()
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		// probing holds the agents with a probe in flight, and probed
		// when each was last probed; both guarded by mu.
		probing = map[string]bool{}
		probed  = map[string]time.Time{}
	)
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := d.now()
		for agent, since := range d.reach.due(now, d.cfg.UnreachableAfter) {
			n, ok := fsm.Get(agent)
			if !ok || !n.Reachable() {
				continue
			}
			if _, err := d.store.Apply(consensus.SetWorkReachability{At: now, AgentID: agent, Unreachable: true, Since: since},
				d.cfg.ApplyTimeout); err != nil {
				d.logger.Warn("recording an unreachable desktop failed", "agent-id", agent, "err", err)
				continue
			}
			d.logger.Warn("desktop's work endpoint unreachable; placing its work elsewhere until it answers again",
				"agent-id", agent, "name", n.Name, "addr", n.WorkAddr, "failing-since", since, "after", d.cfg.UnreachableAfter)
		}
		for _, n := range fsm.List() {
			if n.Reachable() || n.WorkAddr == "" || n.Status == consensus.StatusLeft {
				continue // a node that left is probed again if it comes back
			}
			mu.Lock()
			skip := probing[n.AgentID] || now.Sub(probed[n.AgentID]) < d.probeInterval()
			if !skip {
				probing[n.AgentID], probed[n.AgentID] = true, now
			}
			mu.Unlock()
			if skip {
				continue
			}
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(probing, n.AgentID)
					mu.Unlock()
				}()
				d.probe(ctx, n)
			})
		}
	}
}

// probe asks an unreachable desktop what it holds. An answer clears the
// mark and drops the attempts the registry has fenced.
func (d *Dispatcher) probe(ctx context.Context, n consensus.Record) {
	cctx, cancel := context.WithTimeout(ctx, d.callTimeout())
	held, err := d.client.List(cctx, n.Name, n.WorkAddr)
	cancel()
	if err != nil && !isAnswer(err) {
		d.logger.Debug("unreachable desktop still does not answer", "agent-id", n.AgentID, "addr", n.WorkAddr, "err", err)
		return
	}
	d.reach.answered(n.AgentID)
	if _, err := d.store.Apply(consensus.SetWorkReachability{At: d.now(), AgentID: n.AgentID}, d.cfg.ApplyTimeout); err != nil {
		d.logger.Warn("recording a desktop reachable again failed", "agent-id", n.AgentID, "err", err)
		return
	}
	d.logger.Info("desktop's work endpoint answers again; placing work on it", "agent-id", n.AgentID, "name", n.Name,
		"unreachable-for", d.now().Sub(n.UnreachableSince).Round(time.Millisecond))
	for _, st := range held {
		if !supersededOn(d.store.FSM(), n.AgentID, st) {
			continue
		}
		d.logger.Info("the desktop holds a superseded attempt; telling it to drop it", "agent-id", n.AgentID,
			"work-id", st.WorkID, "attempt", st.Attempt, "status", st.Status)
		cctx, cancel := context.WithTimeout(ctx, d.callTimeout())
		if err := d.client.Drop(cctx, n.Name, n.WorkAddr, st.WorkID, st.Attempt); err != nil {
			d.logger.Debug("dropping a superseded attempt failed", "agent-id", n.AgentID, "work-id", st.WorkID, "err", err)
		}
		cancel()
	}
}

// supersededOn reports whether the registry has moved on from the attempt
// that agent reports in st: a later attempt, another node, or an item no
// longer active (its result is recorded or it was requeued) — the latter
// only for attempts that have not finished, since a finished result the
// leader has recorded is forgotten by its own tracker.
func supersededOn(fsm *consensus.FSM, agent string, st worker.State) bool {
	w, ok := fsm.GetWork(st.WorkID)
	switch {
	case !ok:
		return !st.Done() // retention forgot it: a running copy is a stray
	case w.Attempts != st.Attempt || w.AgentID != agent:
		return true
	case w.Status == consensus.WorkAssigned || w.Status == consensus.WorkRunning:
		return false
	}
	return w.Status == consensus.WorkPending || !st.Done()
}
