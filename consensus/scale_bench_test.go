package consensus

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkFSMSnapshot_Scale persists registries of 100, 1,000 and 10,000
// desktops (no work items) and reports the snapshot's size: what a raft
// snapshot, and a follower's catch-up by snapshot, cost as the fleet grows
// (docs/ARCHITECTURE.md, Scale).
func BenchmarkFSMSnapshot_Scale(b *testing.B) {
	for _, n := range []int{100, 1_000, 10_000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			f := NewFSM()
			nodes := make([]Record, n)
			for i := range nodes {
				nodes[i] = testRecord(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), StatusOnline)
			}
			data, err := EncodeCommand(UpsertNodes{At: t0, Nodes: nodes})
			if err != nil {
				b.Fatal(err)
			}
			f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
			size := len(snapshotBytes(b, f))
			b.ReportAllocs()
			for b.Loop() {
				snapshotBytes(b, f)
			}
			b.ReportMetric(float64(size), "bytes/snapshot")
			b.ReportMetric(float64(size)/float64(n), "bytes/agent")
		})
	}
}
