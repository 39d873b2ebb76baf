package api

import (
	"math"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// The registry's types (package consensus) are its storage format; the
// API writes package apitype's. These functions are the only place where
// one becomes the other, one per type, and TestAPI_WireTypesCoverRegistry
// fails when a registry field has no wire counterpart.

// agentOf renders a registry record.
func agentOf(r *consensus.Record) apitype.Agent {
	return apitype.Agent{
		AgentID:          r.AgentID,
		Name:             r.Name,
		Roles:            append([]string{}, r.Roles...),
		GossipAddr:       r.GossipAddr,
		APIAddr:          r.APIAddr,
		RaftAddr:         r.RaftAddr,
		Status:           string(r.Status),
		Metrics:          metricsOf(&r.Metrics),
		WorkSlots:        r.WorkSlots,
		WorkAddr:         r.WorkAddr,
		Reachable:        r.Reachable(),
		UnreachableSince: unreachableSince(r),
		SampledAt:        timeOrNil(r.SampledAt),
		SampleAgeS:       sampleAge(r.SampledAt, time.Now()),
		Owner:            r.Owner,
		OwnerSince:       timeOrNil(r.OwnerSince),
		MAC:              r.MAC,
		WakeSentAt:       timeOrNil(r.WakeSentAt),
		FlapScore:        r.FlapScore,
		History:          historyOf(r.History),
		FirstSeenAt:      r.FirstSeenAt,
		LastHeartbeatAt:  r.LastHeartbeatAt,
		StatusChangedAt:  r.StatusChangedAt,
		ModifyIndex:      r.ModifyIndex,
	}
}

// unreachableSince renders a record's UnreachableSince: nil while
// reachable.
func unreachableSince(r *consensus.Record) *time.Time {
	if r.Reachable() {
		return nil
	}
	t := r.UnreachableSince
	return &t
}

// sampleAge is now − sampledAt in seconds, to 0.1 s and at least 0 (the
// desktop's clock may be ahead of this orchestrator's); nil when the node
// does not sample (zero sampledAt).
func sampleAge(sampledAt, now time.Time) *float64 {
	a, ok := ageSeconds(sampledAt, now)
	if !ok {
		return nil
	}
	return &a
}

// ageSeconds is sampleAge without the allocation; ok is false for a zero
// sampledAt.
func ageSeconds(sampledAt, now time.Time) (float64, bool) {
	if sampledAt.IsZero() {
		return 0, false
	}
	return math.Round(max(0, now.Sub(sampledAt).Seconds())*10) / 10, true
}

// timeOrNil renders an optional time: nil when zero.
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// historyOf renders status transitions, [] (never null) for none.
func historyOf(h []consensus.Transition) []apitype.Transition {
	out := make([]apitype.Transition, len(h))
	for i, t := range h {
		out[i] = apitype.Transition{At: t.At, From: string(t.From), To: string(t.To)}
	}
	return out
}

// agentsOf renders records, [] (never null) for none.
func agentsOf(recs []consensus.Record) []apitype.Agent {
	out := make([]apitype.Agent, len(recs))
	for i := range recs {
		out[i] = agentOf(&recs[i])
	}
	return out
}

// metricsOf renders a resource sample.
func metricsOf(m *consensus.ResourceMetrics) apitype.ResourceMetrics {
	return apitype.ResourceMetrics{
		CPULoad1Min:        m.CPULoad1Min,
		CPULoad5Min:        m.CPULoad5Min,
		CPULoad15Min:       m.CPULoad15Min,
		CPUCoresPhysical:   m.CPUCoresPhysical,
		CPUCoresAvailable:  m.CPUCoresAvailable,
		MemoryPercent:      m.MemoryPercent,
		MemoryAvailableGB:  m.MemoryAvailableGB,
		GPUVRAMTotalGB:     m.GPUVRAMTotalGB,
		GPUVRAMAvailableGB: m.GPUVRAMAvailableGB,
		GPUVRAMMaxFreeGB:   m.GPUVRAMMaxFreeGB,
		GPUCount:           m.GPUCount,
		GPUType:            m.GPUType,
		GPUs:               gpusOf(m.GPUs),
	}
}

// gpusOf renders per-GPU detail, [] (never null) for none.
func gpusOf(gs []consensus.GPU) []apitype.GPU {
	out := make([]apitype.GPU, len(gs))
	for i, g := range gs {
		out[i] = apitype.GPU(g) // the same fields: the build breaks if they part
	}
	return out
}

// workOf renders a work item, whole.
func workOf(w *consensus.WorkItem) apitype.WorkItem {
	return apitype.WorkItem{
		WorkSummary: apitype.WorkSummary{
			WorkID:      w.WorkID,
			Status:      string(w.Status),
			Attempts:    w.Attempts,
			MaxAttempts: w.MaxAttempts,
			AgentID:     w.AgentID,
			GPUIndex:    w.GPUIndex,
			SubmittedAt: w.SubmittedAt,
			FinishedAt:  w.FinishedAt,
			ExitCode:    w.ExitCode,
			Error:       w.Error,
		},
		Requirements:   requirementsOf(w.Requirements),
		PinAgentID:     w.PinAgentID,
		Payload:        w.Payload,
		ReplyTo:        w.ReplyTo,
		CorrelationID:  w.CorrelationID,
		Deadline:       w.Deadline,
		AssignedAt:     w.AssignedAt,
		LeaseExpiresAt: w.LeaseExpiresAt,
		StartedAt:      w.StartedAt,
		Output:         w.Output,
		DeadLetter:     w.DeadLetter,
		Published:      w.Published,
		PublishedAt:    w.PublishedAt,
		Events:         workEventsOf(w.Events),
		CreateIndex:    w.CreateIndex,
		ModifyIndex:    w.ModifyIndex,
	}
}

// workEventsOf renders a work item's events; nil for none.
func workEventsOf(es []consensus.WorkEvent) []apitype.WorkEvent {
	if len(es) == 0 {
		return nil
	}
	out := make([]apitype.WorkEvent, len(es))
	for i, e := range es {
		out[i] = apitype.WorkEvent(e) // the same fields: the build breaks if they part
	}
	return out
}

// requirementsOf renders a work item's requirements.
func requirementsOf(r consensus.Requirements) apitype.Requirements {
	return apitype.Requirements{MinGPUVRAMGB: r.MinGPUVRAMGB, MinCPUCores: r.MinCPUCores, GPUType: r.GPUType}
}
