package node

import (
	"testing"

	"github.com/chiffon-dev/chiffon/consensus"
)

// TestAllSupport: a newer raft command is written only once every server
// says it applies it; a server that says nothing is 0.1.0.
func TestAllSupport(t *testing.T) {
	servers := []consensus.Server{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	cases := []struct {
		name string
		said map[string]int
		want bool
	}{
		{"all on 0.2.0", map[string]int{"a": 8, "b": 8, "c": 8}, true},
		{"one newer still", map[string]int{"a": 8, "b": 9, "c": 8}, true},
		{"one on 0.1.0 (no tag)", map[string]int{"a": 8, "b": 0, "c": 8}, false},
		{"one unknown member", map[string]int{"a": 8, "b": 8}, false},
	}
	for _, tc := range cases {
		if got := allSupport(servers, tc.said, consensus.CmdWakeNode); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if allSupport(nil, map[string]int{"a": 8}, consensus.CmdWakeNode) {
		t.Error("no servers known: want false")
	}
}
