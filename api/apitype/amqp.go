package apitype

import (
	"encoding/json"
	"time"
)

// WorkRequest is a work request as producers publish it to the work queue
// (chiffon.work): a persistent AMQP message whose body is this JSON. AMQP
// reply_to and correlation_id are honoured; work_id is the idempotency
// key. Unknown top-level fields are ignored, unknown requirements refused.
type WorkRequest struct {
	WorkID       string       `json:"work_id"`
	Requirements Requirements `json:"requirements"`
	// AgentID, when set, pins the work to that node.
	AgentID string          `json:"agent_id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// WorkResult is the message published for every finished work item, to
// the request's reply_to or else to the results queue, with its
// correlation_id. Delivery is at least once: consumers dedupe by work_id.
type WorkResult struct {
	WorkID string `json:"work_id"`
	// Status is succeeded or failed.
	Status     string    `json:"status"`
	AgentID    string    `json:"agent_id"`
	ExitCode   int       `json:"exit_code"`
	Output     string    `json:"output"`
	Error      string    `json:"error"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Attempts   int       `json:"attempts"`
}
