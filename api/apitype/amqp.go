package apitype

import (
	"encoding/json"
	"time"
)

// AMQPSchemaHeader is the AMQP header that carries the version of the
// message bodies' schema (WorkRequest, WorkResult): every result and
// dead-lettered copy the bridge publishes has it, set to
// AMQPSchemaVersion; a request may carry it (absent means 1). The bridge
// dead-letters a request whose version is higher than its own, rather than
// misread it. Fields may be added within a version (unknown fields are
// ignored); a change an older reader would misread takes a new version.
const AMQPSchemaHeader = "x-chiffon-schema"

// AMQPSchemaVersion is the schema version of this build's AMQP messages.
const AMQPSchemaVersion = 1

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
