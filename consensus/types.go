package consensus

import (
	"slices"
	"time"
)

// Status is a node's liveness as the leader last decided it.
type Status string

// The statuses a Record can hold. See DESIGN.md for when each is set.
const (
	// StatusOnline: the node answers gossip probes.
	StatusOnline Status = "online"
	// StatusSuspect: gossip stopped hearing from the node; placement avoids it.
	StatusSuspect Status = "suspect"
	// StatusOffline: the node has been silent for the suspicion timeout.
	StatusOffline Status = "offline"
	// StatusLeft: the node stopped gracefully.
	StatusLeft Status = "left"
	// StatusAsleep: the node said it was going to sleep (suspend); no
	// suspicion clock runs and no work is placed until it wakes.
	StatusAsleep Status = "asleep"
)

// Statuses lists every known Status, in lifecycle order.
var Statuses = []Status{StatusOnline, StatusSuspect, StatusOffline, StatusLeft, StatusAsleep}

// Owner states a desktop reports (Record.Owner).
const (
	OwnerActive = "active" // someone is at the keyboard: no new work
	OwnerIdle   = "idle"   // idle for the desktop's -owner-idle
)

// Transition is one change of a node's status, kept in Record.History.
type Transition struct {
	// At is when the leader recorded the change.
	At time.Time `json:"at"`
	// From and To are the statuses before and after.
	From Status `json:"from"`
	To   Status `json:"to"`
}

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool { return slices.Contains(Statuses, s) }

// GPU describes one GPU of a node as last sampled.
type GPU struct {
	// Index is the device index as the driver numbers it.
	Index int `json:"index"`
	// Name is the product name, e.g. "NVIDIA GeForce RTX 4090".
	Name string `json:"name"`
	// VRAMTotalGB is the GPU's memory in GB.
	VRAMTotalGB float64 `json:"vram_total_gb"`
	// VRAMFreeGB is the GPU's unused memory in GB.
	VRAMFreeGB float64 `json:"vram_free_gb"`
	// UtilizationPct is the GPU's compute utilisation, 0–100.
	UtilizationPct float64 `json:"utilization_pct"`
}

// ResourceMetrics is a node's resource sample as gossiped and recorded.
type ResourceMetrics struct {
	// CPULoad1Min is the 1-minute load average.
	CPULoad1Min float64 `json:"cpu_load_1min"`
	// CPULoad5Min is the 5-minute load average.
	CPULoad5Min float64 `json:"cpu_load_5min"`
	// CPULoad15Min is the 15-minute load average.
	CPULoad15Min float64 `json:"cpu_load_15min"`
	// CPUCoresPhysical is the number of physical cores.
	CPUCoresPhysical int `json:"cpu_cores_physical"`
	// CPUCoresAvailable estimates idle cores (physical cores less load).
	CPUCoresAvailable float64 `json:"cpu_cores_available"`
	// MemoryPercent is the share of RAM in use, 0–100.
	MemoryPercent float64 `json:"memory_percent"`
	// MemoryAvailableGB is the RAM available to new work in GB.
	MemoryAvailableGB float64 `json:"memory_available_gb"`
	// GPUVRAMTotalGB is the VRAM of all GPUs together in GB.
	GPUVRAMTotalGB float64 `json:"gpu_vram_total_gb"`
	// GPUVRAMAvailableGB is the free VRAM of all GPUs together in GB.
	GPUVRAMAvailableGB float64 `json:"gpu_vram_available_gb"`
	// GPUVRAMMaxFreeGB is the largest free VRAM on a single GPU in GB: what a
	// job that needs its memory on one GPU can get.
	GPUVRAMMaxFreeGB float64 `json:"gpu_vram_max_free_gb"`
	// GPUCount is the number of GPUs.
	GPUCount int `json:"gpu_count"`
	// GPUType is the GPU vendor: nvidia, amd, intel or none.
	GPUType string `json:"gpu_type"`
	// GPUs holds per-GPU detail when known.
	GPUs []GPU `json:"gpus"`
}

// Clone returns a deep copy of m.
func (m ResourceMetrics) Clone() ResourceMetrics {
	m.GPUs = slices.Clone(m.GPUs)
	return m
}

// Record is one node in the registry. The leader computes every field except
// ModifyIndex (and FirstSeenAt for a node already known), which the FSM sets.
type Record struct {
	// AgentID is the node's persistent identity, a UUID.
	AgentID string `json:"agent_id"`
	// Name is the node's gossip name (usually its host name).
	Name string `json:"name"`
	// Roles are the node's roles: "desktop", "orchestrator".
	Roles []string `json:"roles"`
	// GossipAddr is the node's serf address, host:port.
	GossipAddr string `json:"gossip_addr"`
	// APIAddr is the node's HTTP API address, if it serves one.
	APIAddr string `json:"api_addr"`
	// RaftAddr is the node's raft address, for orchestrators.
	RaftAddr string `json:"raft_addr"`
	// Status is the node's liveness.
	Status Status `json:"status"`
	// Metrics is the node's last recorded resource sample.
	Metrics ResourceMetrics `json:"resource_metrics"`
	// WorkSlots is how many work items the node runs at once (its
	// -work-concurrency); 0 means it has no work handler and takes no work.
	WorkSlots int `json:"work_slots,omitempty"`
	// WorkAddr is the host:port of the node's work endpoint (POST /v1/work),
	// or https://host:port when the endpoint serves TLS.
	WorkAddr string `json:"work_addr,omitempty"`
	// UnreachableSince, when set, is when the leader's calls to the node's
	// work endpoint started failing, recorded once they had failed for the
	// leader's -work-unreachable-after: placement skips the node and its
	// work is re-placed, whatever gossip says of its liveness (other nodes
	// may still reach it). Only SetWorkReachability changes it: an
	// UpsertNodes keeps a known node's stored value. Zero: reachable.
	UnreachableSince time.Time `json:"unreachable_since,omitzero"`
	// SampledAt is when the desktop took the sample in Metrics, by its own
	// clock (gossip tag "ts"); zero for nodes that do not sample.
	SampledAt time.Time `json:"sampled_at,omitzero"`
	// Owner is OwnerActive or OwnerIdle when the desktop watches its owner,
	// "" when it does not; OwnerSince is when that state began.
	Owner      string    `json:"owner,omitempty"`
	OwnerSince time.Time `json:"owner_since,omitzero"`
	// MAC is the hardware address of the desktop's interface, for
	// wake-on-LAN; "" when unknown or opted out.
	MAC string `json:"mac,omitempty"`
	// WakeSentAt is when the leader last sent the node a wake-on-LAN
	// packet (the leader's clock). Only WakeNode changes it: an
	// UpsertNodes keeps a known node's stored value.
	WakeSentAt time.Time `json:"wake_sent_at,omitzero"`
	// FlapScore is the node's decaying count of status flaps
	// (online↔suspect), as of StatusChangedAt; placement prefers low scores.
	FlapScore float64 `json:"flap_score,omitempty"`
	// History holds the node's last status transitions, oldest first.
	History []Transition `json:"history,omitempty"`
	// FirstSeenAt is when the registry first recorded the node. The FSM keeps
	// the first value it stored.
	FirstSeenAt time.Time `json:"first_seen_at"`
	// LastHeartbeatAt is when the leader last heard of the node.
	LastHeartbeatAt time.Time `json:"last_heartbeat_at"`
	// StatusChangedAt is when Status last changed.
	StatusChangedAt time.Time `json:"status_changed_at"`
	// ModifyIndex is the raft log index of the record's last change, set by
	// the FSM.
	ModifyIndex uint64 `json:"modify_index"`
}

// Clone returns a deep copy of r.
func (r Record) Clone() Record {
	r.Roles = slices.Clone(r.Roles)
	r.Metrics = r.Metrics.Clone()
	r.History = slices.Clone(r.History)
	return r
}

// Reachable reports whether the leader can reach r's work endpoint (see
// UnreachableSince).
func (r Record) Reachable() bool { return r.UnreachableSince.IsZero() }

// HasRole reports whether r lists role among its roles.
func (r Record) HasRole(role string) bool { return slices.Contains(r.Roles, role) }
