package apitype

import (
	"encoding/json"
	"time"
)

// Requirements is what a work item needs of the node that runs it, in a
// work request and in the work item. Zero values mean "no requirement".
type Requirements struct {
	// MinGPUVRAMGB is the free VRAM the work needs on one GPU, in GB.
	MinGPUVRAMGB float64 `json:"min_gpu_vram_gb,omitempty"`
	// MinCPUCores is the idle cores the work needs.
	MinCPUCores float64 `json:"min_cpu_cores,omitempty"`
	// GPUType, when set, is the GPU vendor the node must have (one of
	// GPUTypes but "none").
	GPUType string `json:"gpu_type,omitempty"`
}

// WorkSummary is what every listing of a work item shows: where it stands
// and how it ended.
type WorkSummary struct {
	WorkID      string    `json:"work_id"`
	Status      string    `json:"status"`
	Attempts    int       `json:"attempts"`
	MaxAttempts int       `json:"max_attempts"`
	AgentID     string    `json:"agent_id,omitempty"`
	GPUIndex    int       `json:"gpu_index"`
	SubmittedAt time.Time `json:"submitted_at"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	ExitCode    int       `json:"exit_code"`
	Error       string    `json:"error,omitempty"`
}

// WorkItem is a whole work item: GET /v1/work/{work_id} answers one, and
// GET /v1/work lists them without Payload and Output. It has a field for
// every field of the registry's work item (a test in package api checks
// that).
type WorkItem struct {
	WorkSummary
	Requirements Requirements `json:"requirements"`
	// PinAgentID, when set, is the only node the work may run on.
	PinAgentID string `json:"pin_agent_id,omitempty"`
	// Payload is the request's payload, handed to the handler on stdin.
	Payload json.RawMessage `json:"payload,omitempty"`
	// ReplyTo and CorrelationID come from the AMQP request.
	ReplyTo       string `json:"reply_to,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	// Deadline is when pending work gives up waiting for capacity.
	Deadline   time.Time `json:"deadline"`
	AssignedAt time.Time `json:"assigned_at,omitzero"`
	// LeaseExpiresAt fences the current attempt: the desktop never starts
	// it at or after this time (the leader's clock).
	LeaseExpiresAt time.Time `json:"lease_expires_at,omitzero"`
	StartedAt      time.Time `json:"started_at,omitzero"`
	// Output is the handler's capped stdout.
	Output string `json:"output,omitempty"`
	// DeadLetter is set on failures also copied to the dead-letter queue.
	DeadLetter bool `json:"dead_letter,omitempty"`
	// Published is set once the broker confirmed the result.
	Published   bool      `json:"published,omitempty"`
	PublishedAt time.Time `json:"published_at,omitzero"`
	// Events are what happened to the item besides its status changes,
	// oldest first (a wake-on-LAN sent for it); absent when none.
	Events []WorkEvent `json:"events,omitempty"`
	// CreateIndex and ModifyIndex are the registry indexes of the item's
	// submission and last change.
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// WorkEvent is one entry of WorkItem.Events.
type WorkEvent struct {
	At time.Time `json:"at"`
	// Event is "wake": a wake-on-LAN packet was sent to AgentID, asleep,
	// because the work fitted only there.
	Event   string `json:"event"`
	AgentID string `json:"agent_id,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// Paging of GET /work: DefaultWorkPage items unless ?limit= asks for
// another number, at most MaxWorkPage.
const (
	DefaultWorkPage = 1000
	MaxWorkPage     = 10000
)

// WorkStatuses lists the values of a work item's status.
var WorkStatuses = []string{"pending", "assigned", "running", "succeeded", "failed"}

// WorkList is one page of GET /v1/work.
type WorkList struct {
	// Count is the number of items in this page, Total the number that
	// match the query in all.
	Count int        `json:"count"`
	Total int        `json:"total"`
	Work  []WorkItem `json:"work"`
	// NextToken, when set, asks for the next page (?next_token=); it is
	// absent on the last page.
	NextToken string `json:"next_token,omitempty"`
}
