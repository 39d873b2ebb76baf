package dispatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/probe"
)

// Request is a work request as producers publish it: a persistent AMQP
// message whose body is this JSON. AMQP reply_to and correlation_id are
// honoured; work_id is the idempotency key.
type Request struct {
	WorkID       string                 `json:"work_id"`
	Requirements consensus.Requirements `json:"requirements"`
	// AgentID, when set, pins the work to that node.
	AgentID string          `json:"agent_id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Result is the message published for every finished work item, to the
// request's reply_to or else to the results queue, with its correlation_id.
// Delivery is at least once: consumers dedupe by work_id.
type Result struct {
	WorkID     string    `json:"work_id"`
	Status     string    `json:"status"` // succeeded | failed
	AgentID    string    `json:"agent_id"`
	ExitCode   int       `json:"exit_code"`
	Output     string    `json:"output"`
	Error      string    `json:"error"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Attempts   int       `json:"attempts"`
}

// ResultOf builds the result message of a finished item.
func ResultOf(w consensus.WorkItem) Result {
	return Result{WorkID: w.WorkID, Status: string(w.Status), AgentID: w.AgentID, ExitCode: w.ExitCode,
		Output: w.Output, Error: w.Error, StartedAt: w.StartedAt, FinishedAt: w.FinishedAt, Attempts: w.Attempts}
}

// ErrBadRequest wraps every reason a request is dead-lettered; the rest of
// the message is the x-chiffon-reason header.
var ErrBadRequest = errors.New("bad work request")

// MaxWorkIDLen bounds a work_id (it appears in URLs and log lines).
const MaxWorkIDLen = 200

// ParseRequest decodes and checks a request body. It refuses (with an
// error wrapping ErrBadRequest) a body over maxBytes, anything but a JSON
// object, a missing or over-long work_id or one with control characters,
// unknown or negative requirements, a gpu_type that no node can have (not
// one of probe.GPUTypes, in any case), and a payload that is not JSON.
// Unknown top-level fields are ignored, so producers may add their own.
func ParseRequest(body []byte, maxBytes int) (Request, error) {
	bad := func(format string, a ...any) (Request, error) {
		return Request{}, fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, a...))
	}
	if len(body) > maxBytes {
		return bad("body of %d bytes exceeds the %d-byte limit", len(body), maxBytes)
	}
	var raw struct {
		WorkID       *string         `json:"work_id"`
		Requirements json.RawMessage `json:"requirements"`
		AgentID      string          `json:"agent_id"`
		Payload      json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return bad("not a JSON object: %v", err)
	}
	if raw.WorkID == nil || *raw.WorkID == "" {
		return bad("no work_id")
	}
	id := *raw.WorkID
	if len(id) > MaxWorkIDLen {
		return bad("work_id longer than %d bytes", MaxWorkIDLen)
	}
	for _, r := range id {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return bad("work_id has a control or invalid character")
		}
	}
	req := Request{WorkID: id, AgentID: raw.AgentID}
	if len(raw.Requirements) > 0 && !bytes.Equal(raw.Requirements, []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(raw.Requirements))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req.Requirements); err != nil {
			return bad("requirements: %v", err)
		}
	}
	if err := req.Requirements.Validate(); err != nil {
		return bad("requirements: %v", err)
	}
	// A vendor no node can report would wait for capacity until its
	// deadline and only then fail; refuse it now, with the reason.
	if gt := req.Requirements.GPUType; gt != "" && !slices.ContainsFunc(probe.GPUTypes, func(k string) bool { return strings.EqualFold(k, gt) }) {
		return bad("requirements: gpu_type %q: want one of %s", gt, strings.Join(probe.GPUTypes, ", "))
	}
	if len(raw.Payload) > 0 {
		var b bytes.Buffer
		if err := json.Compact(&b, raw.Payload); err != nil {
			return bad("payload: %v", err)
		}
		req.Payload = b.Bytes()
	}
	return req, nil
}

// expirationDeadline turns an AMQP expiration (milliseconds, as a string)
// into a deadline after now; ok is false when there is none or it is not a
// number.
func expirationDeadline(exp string, now time.Time) (time.Time, bool) {
	if exp == "" {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || ms < 0 {
		return time.Time{}, false
	}
	return now.Add(time.Duration(ms) * time.Millisecond), true
}
