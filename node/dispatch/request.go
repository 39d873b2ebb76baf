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

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/probe"
)

// ResultOf builds the result message of a finished item.
func ResultOf(w consensus.WorkItem) apitype.WorkResult {
	return apitype.WorkResult{WorkID: w.WorkID, Status: string(w.Status), AgentID: w.AgentID, ExitCode: w.ExitCode,
		Output: w.Output, Error: w.Error, StartedAt: w.StartedAt, FinishedAt: w.FinishedAt, Attempts: w.Attempts}
}

// requestOf rebuilds the request of a work item (for the dead-letter
// queue). The wire's Requirements and the registry's have the same fields,
// so each converts to the other directly; the build breaks if they part.
func requestOf(w consensus.WorkItem) apitype.WorkRequest {
	return apitype.WorkRequest{WorkID: w.WorkID, Requirements: apitype.Requirements(w.Requirements),
		AgentID: w.PinAgentID, Payload: w.Payload}
}

// ErrBadRequest is wrapped by every reason a request is dead-lettered
// (each a *RequestError).
var ErrBadRequest = errors.New("bad work request")

// RequestError is why ParseRequest refused a request. It wraps
// ErrBadRequest; its Reason is the x-chiffon-reason header of the
// request's dead-lettered copy.
type RequestError struct {
	// Reason says what is wrong with the request, for its producer.
	Reason string
}

func (e *RequestError) Error() string { return ErrBadRequest.Error() + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrBadRequest) hold.
func (e *RequestError) Unwrap() error { return ErrBadRequest }

// CheckSchema refuses (with a *RequestError) a request whose
// apitype.AMQPSchemaHeader names a schema version newer than this build's
// apitype.AMQPSchemaVersion, or one that is not a positive integer. A
// request without the header is version 1.
func CheckSchema(headers map[string]any) error {
	v, ok := headers[apitype.AMQPSchemaHeader]
	if !ok {
		return nil
	}
	var n int64
	switch v := v.(type) {
	case int:
		n = int64(v)
	case int8:
		n = int64(v)
	case int16:
		n = int64(v)
	case int32:
		n = int64(v)
	case int64:
		n = v
	case uint8:
		n = int64(v)
	case uint16:
		n = int64(v)
	case uint32:
		n = int64(v)
	case string:
		var err error
		if n, err = strconv.ParseInt(v, 10, 64); err != nil {
			n = 0
		}
	}
	switch {
	case n < 1:
		return &RequestError{Reason: fmt.Sprintf("header %s: %v is not a schema version (a positive integer)", apitype.AMQPSchemaHeader, v)}
	case n > apitype.AMQPSchemaVersion:
		return &RequestError{Reason: fmt.Sprintf("header %s: schema version %d is newer than this orchestrator's %d: upgrade the orchestrators first",
			apitype.AMQPSchemaHeader, n, apitype.AMQPSchemaVersion)}
	}
	return nil
}

// MaxWorkIDLen bounds a work_id (it appears in URLs and log lines).
const MaxWorkIDLen = 200

// ParseRequest decodes and checks a request body. It refuses (with a
// *RequestError, which wraps ErrBadRequest) a body over maxBytes, anything but a JSON
// object, a missing or over-long work_id or one with control characters,
// unknown or negative requirements, a gpu_type that no node can have (not
// one of probe.GPUTypes, in any case), and a payload that is not JSON.
// Unknown top-level fields are ignored, so producers may add their own.
func ParseRequest(body []byte, maxBytes int) (apitype.WorkRequest, error) {
	bad := func(format string, a ...any) (apitype.WorkRequest, error) {
		return apitype.WorkRequest{}, &RequestError{Reason: fmt.Sprintf(format, a...)}
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
	req := apitype.WorkRequest{WorkID: id, AgentID: raw.AgentID}
	if len(raw.Requirements) > 0 && !bytes.Equal(raw.Requirements, []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(raw.Requirements))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req.Requirements); err != nil {
			return bad("requirements: %v", err)
		}
	}
	if err := consensus.Requirements(req.Requirements).Validate(); err != nil {
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

// checkPin refuses (with a *RequestError) a request pinned with agent_id
// to a node that cannot run work as the registry stands: one the registry
// does not know, one that is not a desktop, or a desktop without a work
// handler (no work slots or no work address in its tags). Waiting would
// only fail it at its deadline, -work-pending-timeout later. A desktop
// with a work handler that is suspect, offline or left now is accepted:
// it may come back (a restart, a network repair), and the request waits
// for it until its deadline, as for capacity. The registry is the
// leader's: a desktop that joined a moment ago and is not recorded yet is
// refused too, and the producer may send the request again.
func checkPin(fsm *consensus.FSM, agentID string) error {
	if agentID == "" {
		return nil
	}
	n, known := fsm.Get(agentID)
	switch {
	case !known:
		return &RequestError{Reason: fmt.Sprintf("agent_id %q: no such node in the registry (GET /v1/agents lists them)", agentID)}
	case !slices.Contains(n.Roles, apitype.RoleDesktop):
		return &RequestError{Reason: fmt.Sprintf("agent_id %q: node %s is not a desktop (roles %s): only desktops run work",
			agentID, n.Name, strings.Join(n.Roles, ","))}
	case n.WorkSlots <= 0 || n.WorkAddr == "":
		return &RequestError{Reason: fmt.Sprintf("agent_id %q: desktop %s runs no work handler (-work-handler)", agentID, n.Name)}
	}
	return nil
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
