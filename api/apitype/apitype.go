// Package apitype holds every wire type of Chiffon: the JSON bodies,
// header names and query parameters of the HTTP API, which the server
// (package api) writes and the client (package api/client) reads, and the
// AMQP work request and result (WorkRequest, WorkResult) that producers
// publish and the bridge (package node/dispatch) answers.
//
// It imports nothing but the standard library and the leaf internal/fleet
// (the role and GPU-type names), so that the CLI, which only needs the
// client, does not link raft, the registry or the server (the idea of
// tailscale's apitype package). The JSON field names are the contract;
// docs/openapi.yaml documents them and a test checks the server against it.
package apitype

import (
	"time"

	"github.com/chiffon-dev/chiffon/internal/fleet"
)

// Header names the server sets on responses (and the token header it
// accepts on requests).
const (
	// HeaderIndex is the registry index (raft log index of the last applied
	// registry change) of the state the response was computed from. Every
	// response carries it. Pass it back as ?index= for a blocking query.
	HeaderIndex = "X-Chiffon-Index"
	// HeaderLastContact is how long ago, in whole milliseconds, the node
	// that answered last heard from the leader while keeping up with it
	// (for a node that cannot write its log: since its appends started
	// failing); 0 when the leader answered, -1 if never.
	HeaderLastContact = "X-Chiffon-Last-Contact"
	// HeaderKnownLeader is "true" when the node that answered knew of a
	// leader and could persist what it sent, else "false".
	HeaderKnownLeader = "X-Chiffon-Known-Leader"
	// HeaderIndexLag is how many committed raft entries the node that
	// answered had not applied yet: the highest commit index it knows of
	// (the leader's, as its last append request said) minus its applied
	// index. 0 on a node that is up to date.
	HeaderIndexLag = "X-Chiffon-Index-Lag"
	// HeaderToken may carry the API token instead of "Authorization: Bearer".
	HeaderToken = "X-Chiffon-Token"
	// HeaderForwardedBy is set by a follower on a request it forwards to the
	// leader, naming itself. A node that receives a forwarded request but no
	// longer leads answers 421 (Misdirected Request) so that the follower
	// looks for the new leader instead of forwarding in circles.
	HeaderForwardedBy = "X-Chiffon-Forwarded-By"
	// HeaderServedBy names the raft ID of the node whose state answered:
	// the leader for a default or consistent read (also when a follower
	// rendered the answer from its replica after catching up with the
	// leader's read index), the receiving node for ?stale.
	HeaderServedBy = "X-Chiffon-Served-By"
)

// Query parameters.
const (
	// ParamStale asks for an answer from the local replica, which may lag.
	ParamStale = "stale"
	// ParamConsistent asks the leader to confirm its leadership first.
	ParamConsistent = "consistent"
	// ParamMaxStale bounds a stale read, as a duration ("5s"): it implies
	// ParamStale, but a follower that last heard from the leader longer
	// ago than this forwards the read to the leader, and answers 503 when
	// the leader cannot be reached (Consul's max_stale).
	ParamMaxStale = "max_stale"
	// ParamIndex makes a query blocking: it returns once the registry index
	// passes this value (or the wait ends).
	ParamIndex = "index"
	// ParamWait bounds a blocking query, as a duration ("30s", "5m").
	ParamWait = "wait"
	// ParamStatus filters GET /agents and GET /work by status.
	ParamStatus = "status"
	// ParamLimit bounds one page of GET /work (1 to MaxWorkPage, default
	// DefaultWorkPage); ParamNextToken asks for the page after the one
	// whose answer carried it.
	ParamLimit     = "limit"
	ParamNextToken = "next_token"
	// ParamMinGPUVRAMGB is the least free VRAM, in GB: on one GPU by
	// default, over all GPUs with vram=total.
	ParamMinGPUVRAMGB = "min_gpu_vram_gb"
	// ParamMinCPUCores is the least number of available CPU cores.
	ParamMinCPUCores = "min_cpu_cores"
	// ParamMinMemoryAvailableGB is the least available RAM, in GB.
	ParamMinMemoryAvailableGB = "min_memory_available_gb"
	// ParamGPUType keeps only agents with this GPU vendor.
	ParamGPUType = "gpu_type"
	// ParamVRAM chooses what min_gpu_vram_gb compares: VRAMSingle (the
	// default) or VRAMTotal.
	ParamVRAM = "vram"
	// ParamIncludeOwnerActive ("true") lists desktops whose owner is at
	// the keyboard too; they are left out by default (they take no work).
	ParamIncludeOwnerActive = "include_owner_active"
)

// Values of ParamVRAM.
const (
	// VRAMSingle compares the largest free VRAM on one GPU: what a job that
	// needs its memory on one GPU can use.
	VRAMSingle = "single"
	// VRAMTotal compares the free VRAM of all GPUs together.
	VRAMTotal = "total"
)

// GPUTypes lists the values of gpu_type.
var GPUTypes = fleet.GPUTypes

// GPUVendors is GPUTypes without "none": the values a work request's
// requirements.gpu_type may take.
var GPUVendors = fleet.GPUVendors

// Role names, the values of an agent's roles.
const (
	RoleDesktop      = fleet.RoleDesktop
	RoleOrchestrator = fleet.RoleOrchestrator
)

// Statuses lists the values of an agent's status.
var Statuses = []string{"online", "suspect", "offline", "left", "asleep"}

// Owner states, the values of an agent's owner ("" when the desktop does
// not watch its owner).
const (
	OwnerActive = "active"
	OwnerIdle   = "idle"
)

// Transition is one status change of an agent (Agent.History).
type Transition struct {
	At   time.Time `json:"at"`
	From string    `json:"from"`
	To   string    `json:"to"`
}

// Capacity is what one agent can take on now: GET /agents/{id}/capacity
// returns one, GET /agents/available-capacity an array.
type Capacity struct {
	// AgentID is the agent's persistent UUID.
	AgentID string `json:"agent_id"`
	// Name is the agent's gossip name (usually its host name).
	Name string `json:"name"`
	// Status is online, suspect, offline or left.
	Status string `json:"status"`
	// Reachable is false while the leader cannot reach the agent's work
	// endpoint (see Agent.Reachable): placement skips it whatever its
	// status says.
	Reachable bool `json:"reachable"`
	// UnreachableSince is when the leader's calls started failing; null
	// while reachable.
	UnreachableSince *time.Time `json:"unreachable_since"`
	// CPUCoresAvailable estimates idle cores (physical cores less load).
	CPUCoresAvailable float64 `json:"cpu_cores_available"`
	// CPUCoresPhysical is the number of physical cores.
	CPUCoresPhysical int `json:"cpu_cores_physical"`
	// MemoryAvailableGB is the RAM available to new work.
	MemoryAvailableGB float64 `json:"memory_available_gb"`
	// GPUVRAMAvailableGB is the free VRAM of all GPUs together.
	GPUVRAMAvailableGB float64 `json:"gpu_vram_available_gb"`
	// GPUVRAMTotalGB is the VRAM of all GPUs together.
	GPUVRAMTotalGB float64 `json:"gpu_vram_total_gb"`
	// GPUVRAMMaxFreeGB is the largest free VRAM on a single GPU.
	GPUVRAMMaxFreeGB float64 `json:"gpu_vram_max_free_gb"`
	// GPUCount is the number of GPUs.
	GPUCount int `json:"gpu_count"`
	// GPUType is nvidia, amd, intel or none.
	GPUType string `json:"gpu_type"`
	// Timestamp is when the leader last heard of the agent
	// (last_heartbeat_at), RFC 3339.
	Timestamp time.Time `json:"timestamp"`
	// GPUs is the per-GPU detail, possibly empty.
	GPUs []GPU `json:"gpus"`
	// Owner is "active" while the desktop's owner is at the keyboard (no
	// new work goes there), "idle", or "" when the desktop does not watch
	// its owner.
	Owner string `json:"owner"`
	// Reserved is what work already placed on the agent (assigned or
	// running) holds. The availability fields above have it subtracted, so
	// two requests between heartbeats are never promised the same VRAM.
	Reserved Reserved `json:"reserved"`
	// SampleAgeS is how old the figures are: seconds from the desktop's
	// sample (Agent.SampledAt, the desktop's clock) to the answer (the
	// answering orchestrator's clock), to 0.1 s, never below 0 (a
	// desktop clock ahead of the orchestrator's would make it negative);
	// null for nodes that do not sample. It stays the last field: the
	// server appends it to a cached encoding at answer time.
	SampleAgeS *float64 `json:"sample_age_s"`
}

// Reserved is the capacity held by work placed on an agent.
type Reserved struct {
	// Items is the number of assigned or running work items.
	Items int `json:"items"`
	// CPUCores is the cores they asked for.
	CPUCores float64 `json:"cpu_cores"`
	// GPUVRAMGB is the VRAM they asked for, all GPUs together.
	GPUVRAMGB float64 `json:"gpu_vram_gb"`
}

// GPU is one GPU of an agent.
type GPU struct {
	// Index is the device index as the driver numbers it.
	Index int `json:"index"`
	// Name is the product name.
	Name string `json:"name"`
	// VRAMTotalGB is the GPU's memory.
	VRAMTotalGB float64 `json:"vram_total_gb"`
	// VRAMFreeGB is the GPU's unused memory.
	VRAMFreeGB float64 `json:"vram_free_gb"`
	// UtilizationPct is the compute utilisation, 0–100.
	UtilizationPct float64 `json:"utilization_pct"`
}

// ResourceMetrics is an agent's last recorded resource sample.
type ResourceMetrics struct {
	CPULoad1Min        float64 `json:"cpu_load_1min"`
	CPULoad5Min        float64 `json:"cpu_load_5min"`
	CPULoad15Min       float64 `json:"cpu_load_15min"`
	CPUCoresPhysical   int     `json:"cpu_cores_physical"`
	CPUCoresAvailable  float64 `json:"cpu_cores_available"`
	MemoryPercent      float64 `json:"memory_percent"`
	MemoryAvailableGB  float64 `json:"memory_available_gb"`
	GPUVRAMTotalGB     float64 `json:"gpu_vram_total_gb"`
	GPUVRAMAvailableGB float64 `json:"gpu_vram_available_gb"`
	GPUVRAMMaxFreeGB   float64 `json:"gpu_vram_max_free_gb"`
	GPUCount           int     `json:"gpu_count"`
	GPUType            string  `json:"gpu_type"`
	GPUs               []GPU   `json:"gpus"`
}

// Agent is a whole registry record: GET /agents returns an array,
// GET /agents/{id} one. It has a field for every field of the registry's
// record (a test in package api checks that), and every field is always
// present.
type Agent struct {
	AgentID    string   `json:"agent_id"`
	Name       string   `json:"name"`
	Roles      []string `json:"roles"`
	GossipAddr string   `json:"gossip_addr"`
	APIAddr    string   `json:"api_addr"`
	RaftAddr   string   `json:"raft_addr"`
	Status     string   `json:"status"`
	// Metrics is the last recorded resource sample (zero for an
	// orchestrator-only node, which does not sample).
	Metrics ResourceMetrics `json:"resource_metrics"`
	// WorkSlots is how many work items the agent runs at once; 0 means it
	// has no work handler and takes no work.
	WorkSlots int `json:"work_slots"`
	// WorkAddr is the host:port of the agent's work endpoint, or
	// https://host:port when it serves TLS; "" without a work handler.
	WorkAddr string `json:"work_addr"`
	// Reachable is false once the leader's calls to the work endpoint have
	// failed for -work-unreachable-after (the agent may still be online:
	// gossip reaches it through other members): placement skips it and its
	// work is placed elsewhere until the leader's probe gets an answer.
	Reachable bool `json:"reachable"`
	// UnreachableSince is when those calls started failing; null while
	// reachable.
	UnreachableSince *time.Time `json:"unreachable_since"`
	// SampledAt is when the desktop took its last sample, by its own
	// clock; null for nodes that do not sample.
	SampledAt *time.Time `json:"sampled_at"`
	// SampleAgeS is now − SampledAt in seconds at the time of the answer
	// (see Capacity.SampleAgeS); null for nodes that do not sample.
	SampleAgeS *float64 `json:"sample_age_s"`
	// Owner is "active", "idle", or "" when the desktop does not watch its
	// owner; OwnerSince is when that state began (null when unknown).
	Owner      string     `json:"owner"`
	OwnerSince *time.Time `json:"owner_since"`
	// MAC is the desktop's hardware address for wake-on-LAN, "" if unknown.
	MAC string `json:"mac"`
	// WakeSentAt is when the leader last sent the agent a wake-on-LAN
	// packet; null if never.
	WakeSentAt *time.Time `json:"wake_sent_at"`
	// FlapScore is the decaying count of the agent's status flaps.
	FlapScore float64 `json:"flap_score"`
	// History is the agent's last status transitions, oldest first.
	History         []Transition `json:"history"`
	FirstSeenAt     time.Time    `json:"first_seen_at"`
	LastHeartbeatAt time.Time    `json:"last_heartbeat_at"`
	StatusChangedAt time.Time    `json:"status_changed_at"`
	ModifyIndex     uint64       `json:"modify_index"`
}

// Leader is GET /v1/status/leader: the leader as the answering node knows
// it. All fields are empty while no leader is known.
type Leader struct {
	// ID is the leader's raft ID (its agent_id).
	ID string `json:"id"`
	// RaftAddr is the leader's raft address.
	RaftAddr string `json:"raft_addr"`
	// HTTPAddr is the leader's HTTP API address, "" if it cannot be
	// resolved.
	HTTPAddr string `json:"http_addr"`
}

// Peer is one raft server, in GET /v1/operator/raft/peers.
type Peer struct {
	// ID is the server's raft ID.
	ID string `json:"id"`
	// Address is the server's raft address.
	Address string `json:"address"`
	// State is "leader" or "follower" (a non-voter is a follower too).
	State string `json:"state"`
	// Voter is false for non-voters.
	Voter bool `json:"voter"`
}

// Peer states.
const (
	PeerLeader   = "leader"
	PeerFollower = "follower"
)

// RemovedPeer is the answer to DELETE /v1/operator/raft/peers/{id}.
type RemovedPeer struct {
	// Removed is the raft ID that was removed.
	Removed string `json:"removed"`
}

// ReadIndex is the internal GET /v1/internal/read-index that followers
// ask the leader: the leader's registry index now (after confirming its
// leadership when ?consistent). A follower that has applied it may answer
// a default (or consistent) read from its own replica.
type ReadIndex struct {
	// Index is the leader's registry index.
	Index uint64 `json:"index"`
}

// Health is GET /healthz: the process is up and serving.
type Health struct {
	// Status is always "ok".
	Status string `json:"status"`
}

// Ready is GET /readyz: 200 when ready, 503 with Reason when not.
type Ready struct {
	// Ready reports whether the node can answer default-mode queries.
	Ready bool `json:"ready"`
	// Reason says why not, when Ready is false.
	Reason string `json:"reason,omitempty"`
	// Leader is the leader's raft ID, "" when none is known.
	Leader string `json:"leader,omitempty"`
	// Index is the local registry index.
	Index uint64 `json:"index"`
}

// Error is the body of every error response (4xx and 5xx).
type Error struct {
	// Error says what was wrong and, for bad input, what is allowed.
	Error string `json:"error"`
}
