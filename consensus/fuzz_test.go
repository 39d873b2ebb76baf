package consensus

import (
	"errors"
	"reflect"
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
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the command:\n first %#v\nsecond %#v", c, c2)
		}
	})
}
