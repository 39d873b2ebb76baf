package node

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node/telemetry"
)

// maxBatch bounds the records in one raft entry, so one entry stays well
// under a megabyte even when a new leader reconciles thousands of nodes.
const maxBatch = 512

// Cluster is what the leader loop reads about the gossip pool; serfView
// provides it from the running gossip layer.
//
// memberlist's own "suspect" state is private (its Members() reports a
// Node.State field that is never updated), so Chiffon's suspect starts when
// serf reports a member failed, and the offline clock is anchored
// FailureLag earlier, when the node actually fell silent.
type Cluster interface {
	// Members lists every member serf knows: alive, leaving, left, failed.
	Members() []serf.Member
	// FailureLag is how long after a node falls silent serf reports it
	// failed: memberlist's suspicion timeout, SuspicionMult × max(1, log10 N)
	// × ProbeInterval (fixed, since Chiffon sets SuspicionMaxTimeoutMult to
	// 1). The offline clock is anchored that far back.
	FailureLag() time.Duration
}

// serfView adapts a running gossip layer to Cluster.
type serfView struct{ g *gossip.Gossip }

var _ Cluster = serfView{}

func (v serfView) Members() []serf.Member { return v.g.Serf().Members() }

func (v serfView) FailureLag() time.Duration { return v.g.FailureLag() }

// Registrar is the slice of the raft store the leader loop writes through.
type Registrar interface {
	Apply(cmd consensus.Command, timeout time.Duration) (uint64, error)
	FSM() *consensus.FSM
	Servers() ([]consensus.Server, error)
	AddVoter(id, addr string) error
	RemoveServer(id string) error
	// ProbePeer checks that addr answers raft (voter admission without
	// TLS; see voters.go).
	ProbePeer(id, addr string) error
	ID() string
}

var _ Registrar = (*consensus.Store)(nil)

// LivenessConfig holds the leader's timing rules.
type LivenessConfig struct {
	// SuspicionTimeout: a node silent this long since it was last known
	// alive is offline. The same at any cluster size, unlike memberlist's.
	SuspicionTimeout time.Duration
	// ReapAfter: offline and left nodes are deleted this long after their
	// status last changed.
	ReapAfter time.Duration
	// RefreshInterval: an online node's last_heartbeat_at is rewritten at
	// least this often even when its metrics did not change.
	RefreshInterval time.Duration
	// DeadServerAfter: a failed orchestrator is removed from the raft
	// configuration after this long (a reboot is not a removal).
	DeadServerAfter time.Duration
	// VoterRoleGrace: a raft server whose gossip member stops saying
	// orchestrator, or is gone from the pool, is logged at once and
	// removed after this long (see voters.go).
	VoterRoleGrace time.Duration
	// FlapHalfLife: a node's flap score (consensus.Record.FlapScore: +1
	// each time it comes back online after going silent) halves every
	// FlapHalfLife (-flap-half-life; consensus.DefaultFlapHalfLife).
	FlapHalfLife time.Duration
}

// reconciler is the leader's view of liveness. It lives only while this
// node leads; a new leader builds a new one from the registry, so the 90 s
// clock continues from the registry's timestamps.
type reconciler struct {
	cfg     LivenessConfig
	cluster Cluster
	store   Registrar
	logger  *slog.Logger
	now     func() time.Time

	// lastAlive is when this leader last saw each agent alive (by agent_id).
	lastAlive map[string]time.Time
	// failedSince tracks failed orchestrators for dead-server removal.
	failedSince map[string]time.Time
	// badTags remembers members whose tags failed to decode (logged once).
	badTags map[string]string
	// verify checks a candidate voter over TLS (nil: no TLS, ProbePeer);
	// verdicts caches its answers and trustLogged says the no-TLS warning
	// was given (voters.go).
	verify      voterCheck
	verdicts    map[voterKey]*verdict
	trustLogged bool
	// overlay holds the tags desktops pushed to this leader (nil: none);
	// plan prefers them to gossip's where they are newer (push.go).
	overlay *telemetry.Overlay
	// roleLost is when each raft server was first seen without the
	// orchestrator role in gossip (by raft ID).
	roleLost map[string]time.Time
	// nextOffline is when the earliest suspect node's suspicion timeout
	// runs out, as of the last plan (zero: no suspect node). The leader
	// loop wakes then instead of on its next tick, so a node turns offline
	// on time rather than up to a reconcile interval late.
	nextOffline time.Time
}

func newReconciler(cfg LivenessConfig, c Cluster, s Registrar, logger *slog.Logger, now func() time.Time) *reconciler {
	return &reconciler{cfg: cfg, cluster: c, store: s, logger: logger, now: now,
		lastAlive: map[string]time.Time{}, failedSince: map[string]time.Time{}, badTags: map[string]string{},
		verdicts: map[voterKey]*verdict{}, roleLost: map[string]time.Time{}}
}

// plan computes the registry changes that bring it in line with the gossip
// pool at time now. It is pure apart from updating lastAlive.
func (r *reconciler) plan(now time.Time) (upserts []consensus.Record, deletes []string) {
	fsm := r.store.FSM()
	seen := map[string]bool{}
	members := r.cluster.Members()
	if r.overlay != nil && r.overlay.Len() > 0 {
		members = slices.Clone(members)
		r.overlay.Merge(members, now)
	}
	for _, m := range members {
		info, err := gossip.DecodeTags(m.Tags)
		if err != nil || info.AgentID == "" {
			if msg := errString(err); r.badTags[m.Name] != msg {
				r.badTags[m.Name] = msg
				r.logger.Warn("ignoring gossip member without valid chiffon tags", "member", m.Name, "err", err)
			}
			continue
		}
		delete(r.badTags, m.Name)
		if seen[info.AgentID] {
			// Two members with one agent_id: a data dir copied to another
			// machine. The first (serf orders by name) wins; say so.
			r.logger.Warn("two gossip members share an agent_id", "agent-id", info.AgentID, "member", m.Name)
			continue
		}
		seen[info.AgentID] = true
		prev, exists := fsm.Get(info.AgentID)
		if !exists && m.Status != serf.StatusAlive {
			// A member that is gone and unknown to the registry was reaped
			// (or never seen alive): nothing to record.
			continue
		}
		next := r.recordFor(prev, exists, m, info, now)
		if !exists || !sameRecord(prev, next) {
			upserts = append(upserts, next)
		}
	}
	reaped := map[string]bool{}
	records := fsm.List()
	for _, prev := range records {
		switch {
		case (prev.Status == consensus.StatusOffline || prev.Status == consensus.StatusLeft) &&
			now.Sub(prev.StatusChangedAt) >= r.cfg.ReapAfter:
			deletes = append(deletes, prev.AgentID)
			reaped[prev.AgentID] = true
		case !seen[prev.AgentID] && (prev.Status == consensus.StatusOnline || prev.Status == consensus.StatusSuspect):
			// No gossip member: serf reaped it, or this leader has never
			// seen it. Its clock runs from the registry.
			next := prev.Clone()
			r.setStatus(&next, prev, r.silentStatus(prev, now), now)
			if !sameRecord(prev, next) {
				upserts = append(upserts, next)
			}
		}
	}
	if len(reaped) > 0 {
		upserts = slices.DeleteFunc(upserts, func(rec consensus.Record) bool { return reaped[rec.AgentID] })
	}
	r.nextOffline = r.earliestOffline(records, upserts)
	return upserts, deletes
}

// earliestOffline is when the first node that will be suspect once upserts
// are applied reaches its suspicion timeout; zero if none is suspect. (A
// record new to the registry is never suspect: only alive members are
// added.)
func (r *reconciler) earliestOffline(records, upserts []consensus.Record) time.Time {
	next := make(map[string]*consensus.Record, len(upserts))
	for i := range upserts {
		next[upserts[i].AgentID] = &upserts[i]
	}
	var earliest time.Time
	for i := range records {
		rec := &records[i]
		if u, ok := next[rec.AgentID]; ok {
			rec = u
		}
		if rec.Status != consensus.StatusSuspect {
			continue
		}
		if at := r.lastAliveAt(*rec).Add(r.cfg.SuspicionTimeout); earliest.IsZero() || at.Before(earliest) {
			earliest = at
		}
	}
	return earliest
}

// recordFor builds the record a member should have now.
func (r *reconciler) recordFor(prev consensus.Record, exists bool, m serf.Member, info gossip.NodeInfo, now time.Time) consensus.Record {
	next := prev.Clone()
	if !exists {
		next = consensus.Record{AgentID: info.AgentID, FirstSeenAt: now, LastHeartbeatAt: now, StatusChangedAt: now}
	}
	next.Name = m.Name
	next.Roles = slices.Clone(info.Roles)
	next.GossipAddr = joinHostPort(m.Addr.String(), int(m.Port))
	next.APIAddr, next.RaftAddr = info.APIAddr, info.RaftAddr
	next.WorkSlots, next.WorkAddr = info.WorkSlots, info.WorkAddr
	var status consensus.Status
	switch {
	case m.Status == serf.StatusLeft || m.Status == serf.StatusLeaving:
		status = consensus.StatusLeft
	case m.Status == serf.StatusAlive:
		status = consensus.StatusOnline
		if info.Asleep {
			// It said it is about to suspend (`chiffon power suspend`, the
			// sleep hook or logind): no work goes there until it wakes.
			status = consensus.StatusAsleep
		}
		r.lastAlive[info.AgentID] = now
		if exists && superseded(prev.SampledAt, info.Sample.TakenAt) {
			// The registry already holds a newer sample than this leader's
			// gossip view (a push to the previous leader, or gossip that
			// reached it first): keep it rather than write an older one,
			// and the asleep-or-awake it said with it.
			if prev.Status == consensus.StatusAsleep || prev.Status == consensus.StatusOnline {
				status = prev.Status
			}
			if prev.Status != consensus.StatusOnline || now.Sub(prev.LastHeartbeatAt) >= r.cfg.RefreshInterval {
				next.LastHeartbeatAt = now
			}
			break
		}
		metrics := metricsFromInfo(info)
		// Fresh metrics, or a periodic refresh, move last_heartbeat_at.
		if !exists || !reflect.DeepEqual(prev.Metrics, metrics) || prev.Status != consensus.StatusOnline ||
			now.Sub(prev.LastHeartbeatAt) >= r.cfg.RefreshInterval {
			next.LastHeartbeatAt = now
		}
		next.Metrics = metrics
		next.SampledAt = info.Sample.TakenAt
		next.Owner, next.OwnerSince, next.MAC = info.Owner, info.OwnerSince, info.MAC
	case info.Asleep:
		// Failed, but its last tags said it was going to sleep: the
		// silence is the suspend, not a failure. No suspicion clock runs;
		// it stays asleep until it answers again (or leaves).
		status = consensus.StatusAsleep
	default: // failed: serf stopped hearing from it
		status = consensus.StatusSuspect
		if exists && prev.Status == consensus.StatusOnline {
			// It fell silent about FailureLag ago, not when serf noticed.
			silent := now.Add(-r.cluster.FailureLag())
			if t, ok := r.lastAlive[info.AgentID]; !ok || silent.Before(t) {
				r.lastAlive[info.AgentID] = silent
			}
		}
		if exists {
			status = r.silentStatus(prev, now)
		}
	}
	r.setStatus(&next, prev, status, now)
	return next
}

// sampleStepBack is how much older than the registry's a desktop's
// sample may be and still be taken for a superseded hint rather than a
// desktop whose clock stepped back: its samples are then all older than
// the one on record, and the registry takes them again once they are
// this much older (a heartbeat is 30 s).
const sampleStepBack = 10 * time.Minute

// superseded reports whether a sample taken at got is older than the one
// the registry holds (held), by less than sampleStepBack. Samples without
// a time (orchestrators) are never superseded.
func superseded(held, got time.Time) bool {
	if held.IsZero() || got.IsZero() {
		return false
	}
	return got.Before(held) && held.Sub(got) < sampleStepBack
}

// silentStatus is suspect until the node has been silent for the
// suspicion timeout since it was last known alive, then offline. An asleep
// node stays asleep: it said it would be silent.
func (r *reconciler) silentStatus(prev consensus.Record, now time.Time) consensus.Status {
	if prev.Status == consensus.StatusOffline || prev.Status == consensus.StatusLeft || prev.Status == consensus.StatusAsleep {
		return prev.Status
	}
	if now.Sub(r.lastAliveAt(prev)) >= r.cfg.SuspicionTimeout {
		return consensus.StatusOffline
	}
	return consensus.StatusSuspect
}

// lastAliveAt is this leader's own estimate if it has one, else the
// registry's last_heartbeat_at (which a previous leader set when it saw the
// node go quiet).
func (r *reconciler) lastAliveAt(prev consensus.Record) time.Time {
	if t, ok := r.lastAlive[prev.AgentID]; ok {
		return t
	}
	return prev.LastHeartbeatAt
}

func (r *reconciler) setStatus(next *consensus.Record, prev consensus.Record, status consensus.Status, now time.Time) {
	if status == prev.Status && !prev.StatusChangedAt.IsZero() {
		return
	}
	if prev.Status == consensus.StatusOnline && status != consensus.StatusOnline {
		// Record when it was last known alive: the offline clock runs from
		// here, also on the next leader.
		next.LastHeartbeatAt = r.lastAliveAt(prev)
	}
	next.Status = status
	next.StatusChangedAt = now
	// History and the flap score change with the status only, so they
	// cost no raft write of their own, and live in the registry, so a new
	// leader carries them on.
	next.RecordTransition(prev.Status, prev.StatusChangedAt, now, r.cfg.FlapHalfLife)
	if prev.Status != "" && prev.Status != status {
		r.logger.Info("node status changed", "agent-id", next.AgentID, "name", next.Name,
			"from", string(prev.Status), "to", string(status))
	}
}

// sameRecord compares what the leader controls.
func sameRecord(a, b consensus.Record) bool {
	a.ModifyIndex, b.ModifyIndex = 0, 0
	a.FirstSeenAt, b.FirstSeenAt = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

// reconcile writes one round of changes through raft. It returns how many
// raft entries it applied.
func (r *reconciler) reconcile(timeout time.Duration) (int, error) {
	now := r.now()
	upserts, deletes := r.plan(now)
	entries := 0
	for len(upserts) > 0 {
		n := min(len(upserts), maxBatch)
		if _, err := r.store.Apply(consensus.UpsertNodes{At: now, Nodes: upserts[:n]}, timeout); err != nil {
			return entries, err
		}
		entries++
		upserts = upserts[n:]
	}
	if len(deletes) > 0 {
		if _, err := r.store.Apply(consensus.DeleteNodes{At: now, AgentIDs: deletes}, timeout); err != nil {
			return entries, err
		}
		for _, id := range deletes {
			delete(r.lastAlive, id)
		}
		r.logger.Info("reaped nodes", "count", len(deletes))
		entries++
	}
	return entries, r.reconcileServers(now)
}

// reconcileServers keeps the raft configuration in line with the
// orchestrators in the gossip pool: alive ones become voters once they
// prove it (admit, voters.go), ones that left are removed, failed ones are
// removed after DeadServerAfter, and servers gossip no longer calls
// orchestrators after VoterRoleGrace (reconcileRoles).
func (r *reconciler) reconcileServers(now time.Time) error {
	servers, err := r.store.Servers()
	if err != nil {
		return err
	}
	inConfig := map[string]string{}
	for _, s := range servers {
		inConfig[s.ID] = s.Address
	}
	var errs []error
	orch, present := map[string]bool{}, map[string]bool{}
	candidates := map[voterKey]bool{}
	for _, m := range r.cluster.Members() {
		info, err := gossip.DecodeTags(m.Tags)
		if err != nil || info.AgentID == "" {
			continue
		}
		present[info.AgentID] = true
		if !info.HasRole(gossip.RoleOrchestrator) || info.RaftAddr == "" || info.AgentID == r.store.ID() {
			continue
		}
		orch[info.AgentID] = true
		addr, member := inConfig[info.AgentID]
		switch m.Status {
		case serf.StatusAlive:
			delete(r.failedSince, info.AgentID)
			if !member || addr != info.RaftAddr {
				candidates[voterKey{info.AgentID, info.RaftAddr}] = true
				if !r.admit(m.Name, info.AgentID, info.RaftAddr, now) {
					continue
				}
				r.logger.Info("adding orchestrator as raft voter", "id", info.AgentID, "member", m.Name, "addr", info.RaftAddr)
				errs = append(errs, r.store.AddVoter(info.AgentID, info.RaftAddr))
			}
		case serf.StatusLeft:
			if member {
				r.logger.Info("removing orchestrator that left", "id", info.AgentID, "member", m.Name)
				errs = append(errs, r.store.RemoveServer(info.AgentID))
			}
		case serf.StatusFailed:
			since, ok := r.failedSince[info.AgentID]
			if !ok {
				r.failedSince[info.AgentID] = now
			} else if member && now.Sub(since) >= r.cfg.DeadServerAfter {
				r.logger.Warn("removing orchestrator dead for too long", "id", info.AgentID, "member", m.Name, "since", since)
				errs = append(errs, r.store.RemoveServer(info.AgentID))
			}
		}
	}
	r.pruneVerdicts(candidates)
	errs = append(errs, r.reconcileRoles(servers, orch, present, now))
	return errors.Join(errs...)
}

// leaderLoop runs while this node is an established leader (leadership
// has run its Barrier): it reconciles every member at once, then again on
// each tick, gossip event or suspicion deadline (batched: at most one round
// per minInterval), until ctx ends.
func leaderLoop(ctx context.Context, r *reconciler, wake <-chan struct{}, interval, minInterval time.Duration) {
	logger := r.logger
	logger.Info("leading: reconciling the gossip pool into the registry")
	tick := time.NewTicker(interval)
	defer tick.Stop()
	deadline := time.NewTimer(interval)
	defer deadline.Stop()
	last := time.Time{}
	for {
		if wait := minInterval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		if _, err := r.reconcile(5 * time.Second); err != nil {
			if errors.Is(err, consensus.ErrNotLeader) {
				logger.Info("reconcile stopped: no longer leader")
			} else {
				logger.Warn("reconcile failed", "err", err)
			}
		}
		// A suspect node's timeout that runs out before the next tick
		// wakes the loop at that moment.
		var offline <-chan time.Time
		if at := r.nextOffline; !at.IsZero() {
			if d := at.Sub(r.now()); d < interval {
				deadline.Reset(max(d, 0))
				offline = deadline.C
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-wake:
		case <-offline:
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
