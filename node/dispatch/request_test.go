package dispatch

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/chiffon-dev/chiffon/consensus"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		body string
		ok   bool
	}{
		{`{"work_id":"a","requirements":{"min_gpu_vram_gb":8,"min_cpu_cores":4,"gpu_type":"nvidia"},"agent_id":"x","payload":{"k":[1, 2]}}`, true},
		{`{"work_id":"a"}`, true},
		{`{"work_id":"a","requirements":null,"extra":"ignored"}`, true},
		{`{"work_id":""}`, false},
		{`{"work_id":5}`, false},
		{`[]`, false},
		{`{"work_id":"a","requirements":{"min_cpu_cores":-0.5}}`, false},
		{`{"work_id":"a","requirements":{"gpus":2}}`, false},
		{`{"work_id":"a","requirements":"big"}`, false},
		{`{"work_id":"a","requirements":{"gpu_type":"quantum"}}`, false},
		{`{"work_id":"a","requirements":{"gpu_type":"AMD"}}`, true},
		{`{"work_id":"a","requirements":{"gpu_type":"none"}}`, true},
	}
	for _, tt := range tests {
		r, err := ParseRequest([]byte(tt.body), 1024)
		if (err == nil) != tt.ok {
			t.Errorf("ParseRequest(%s) = %+v, %v; want ok %v", tt.body, r, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadRequest) {
			t.Errorf("error %v does not wrap ErrBadRequest", err)
		}
	}
	r, _ := ParseRequest([]byte(tests[0].body), 1024)
	if string(r.Payload) != `{"k":[1,2]}` || r.Requirements.MinCPUCores != 4 || r.AgentID != "x" {
		t.Fatalf("parsed %+v", r)
	}
}

// FuzzParseRequest: never panics; what it accepts has a work_id, valid
// requirements, and a payload that re-encodes unchanged.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"work_id":"a","requirements":{"min_gpu_vram_gb":8},"payload":{"x":1}}`))
	f.Add([]byte(`{"work_id":"\u0000"}`))
	f.Add([]byte(`{"work_id":"a","requirements":{"min_cpu_cores":1e400}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b, 4096)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if r.WorkID == "" || consensus.Requirements(r.Requirements).Validate() != nil {
			t.Fatalf("accepted %+v", r)
		}
		if len(r.Payload) > 0 {
			out, err := json.Marshal(r.Payload)
			if err != nil || string(out) != string(r.Payload) {
				t.Fatalf("payload %q re-encodes as %q (%v)", r.Payload, out, err)
			}
		}
	})
}

// TestReasonOf: the dead-letter reason is the RequestError's own, however
// the error was wrapped on its way, and never the sentinel's prefix.
func TestReasonOf(t *testing.T) {
	_, err := ParseRequest([]byte(`{"requirements":{"min_cpu_cores":1}}`), 1<<20)
	var re *RequestError
	if !errors.As(err, &re) || !errors.Is(err, ErrBadRequest) {
		t.Fatalf("ParseRequest error %v: want a *RequestError wrapping ErrBadRequest", err)
	}
	for _, e := range []error{err, fmt.Errorf("batch: %w", err)} {
		if got := reasonOf(e); got != "no work_id" {
			t.Errorf("reasonOf(%q) = %q, want %q", e, got, "no work_id")
		}
	}
	if got := reasonOf(errors.New("broker gone")); got != "broker gone" {
		t.Errorf("reasonOf of another error = %q", got)
	}
}
