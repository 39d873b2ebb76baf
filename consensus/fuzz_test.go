package consensus

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecodeCommand checks that DecodeCommand never panics, that its errors
// wrap ErrBadCommand, and that whatever it accepts re-encodes and decodes to
// the same value (so a replica re-reading its log sees what the leader
// meant).
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []Command{
		UpsertNodes{At: t0, Nodes: []Record{testRecord("a", StatusOnline), {AgentID: "b"}}},
		DeleteNodes{At: t0, AgentIDs: []string{"a"}},
		SubmitWork{At: t0, Items: []WorkItem{testWork("w"), {WorkID: "v", MaxAttempts: 1}}},
		UpdateWork{At: t0, Transitions: []WorkTransition{{WorkID: "w", To: WorkAssigned, Attempt: 1, AgentID: "a"},
			{WorkID: "w", To: WorkFailed, Attempt: 1, ExitCode: 2, Output: "out", Error: "boom", FinishedAt: t0}}},
		MarkWorkPublished{At: t0, WorkIDs: []string{"w"}},
		DeleteWork{At: t0, WorkIDs: []string{"w"}},
		SetWorkReachability{At: t0, AgentID: "a", Unreachable: true, Since: t0},
		WakeNode{At: t0, AgentID: "a", MAC: "0a:1b:2c:3d:4e:5f", WorkIDs: []string{"w"}},
	} {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add(append([]byte{1}, `{"at":"2025-03-01T12:00:00+02:00","nodes":[{"agent_id":"x","roles":null,"resource_metrics":{"gpus":[{}]}}]}`...))
	f.Add(append([]byte{2}, `{"at":"0001-01-01T00:00:00Z","agent_ids":[]}`...))
	f.Add(append([]byte{3}, `{}`...))
	f.Add(append([]byte{3}, `{"at":"2025-03-01T12:00:00Z","items":[{"work_id":"w","max_attempts":1,"payload":{ "a" : "\xff" },"requirements":{"min_cpu_cores":-0}}]}`...))
	f.Add(append([]byte{4}, `{"at":"2025-03-01T12:00:00Z","transitions":[{"work_id":"w","to":"assigned"}]}`...))
	f.Add(append([]byte{7}, `{}`...))

	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error %v does not wrap ErrBadCommand", err)
			}
			return
		}
		b2, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("decoded %#v but cannot re-encode: %v", c, err)
		}
		c2, err := DecodeCommand(b2)
		if err != nil {
			t.Fatalf("cannot decode re-encoded %q: %v", b2, err)
		}
		// Compare encodings, not values: a time decoded from "+00:00" is a
		// fixed zone that re-encodes as "Z", so DeepEqual would differ while
		// every replica still applies the same instant. The encoding must be
		// a fixed point after one round.
		b3, err := EncodeCommand(c2)
		if err != nil || !bytes.Equal(b2, b3) {
			t.Fatalf("round trip changed the command:\n first %q\nsecond %q (%v)", b2, b3, err)
		}
	})
}
