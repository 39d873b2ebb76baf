package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// benchRegistry returns an FSM with n online desktops, about 10 % of them
// with 24 GB free on one GPU and at least 4 free cores.
func benchRegistry(b *testing.B, n int) *consensus.FSM {
	fsm := consensus.NewFSM()
	recs := make([]consensus.Record, n)
	for i := range n {
		vram := 4.0
		if i%10 == 0 {
			vram = 24
		}
		recs[i] = rec(i, consensus.StatusOnline, vram, float64(4+i%8), 32, "nvidia")
		recs[i].SampledAt = time.Now().Add(-time.Duration(i%30) * time.Second) // answers carry sample_age_s
	}
	applyFSM(b, fsm, 10, recs...)
	return fsm
}

// nullWriter is a ResponseWriter that discards the body.
type nullWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) WriteHeader(code int)        { w.code = code }
func (w *nullWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// BenchmarkAPI_AvailableCapacity measures the whole handler (parsing,
// consistency headers, metrics, filtering the precomputed view) on the
// leader, at registry sizes of 1,000 and 10,000 agents.
func BenchmarkAPI_AvailableCapacity(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			s, _ := newTestServer(b, benchRegistry(b, n), newLeaderRaft("l"), nil)
			h := s.Handler()
			req := httptest.NewRequest("GET", "/agents/available-capacity?min_gpu_vram_gb=16&min_cpu_cores=4", nil)
			w := &nullWriter{h: http.Header{}}
			h.ServeHTTP(w, req)
			if w.code != 200 {
				b.Fatalf("status %d", w.code)
			}
			b.SetBytes(int64(w.n))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				w.h, w.n = http.Header{}, 0
				h.ServeHTTP(w, req)
			}
		})
	}
}

// BenchmarkAPI_AvailableCapacityNaive is the approach the view replaces:
// list, filter, sort and marshal the registry per request.
func BenchmarkAPI_AvailableCapacityNaive(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			fsm := benchRegistry(b, n)
			f := capacityFilter{minVRAM: 16, minCores: 4}
			b.ReportAllocs()
			for b.Loop() {
				var out []*capEntry
				for _, r := range fsm.List() {
					e := &capEntry{id: r.AgentID, status: string(r.Status), desktop: r.HasRole(apitype.RoleDesktop),
						maxFree: r.Metrics.GPUVRAMMaxFreeGB, cores: r.Metrics.CPUCoresAvailable, mem: r.Metrics.MemoryAvailableGB, json: []byte{1}}
					if e.desktop && e.status == "online" && f.matches(e) {
						out = append(out, e)
					}
				}
				slices.SortFunc(out, compareEntries)
				caps := make([]any, 0, len(out))
				for _, e := range out {
					r, _ := fsm.Get(e.id)
					caps = append(caps, capacityOf(&r, nil))
				}
				if _, err := json.Marshal(caps); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAPI_ViewRebuild is the cost paid once per registry index
// change: a heartbeat batch that changed 1 % of the agents.
func BenchmarkAPI_ViewRebuild(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			fsm := benchRegistry(b, n)
			old := buildView(fsm, nil, nil)
			changed := make([]consensus.Record, 0, n/100)
			for i := 0; i < n; i += 100 {
				changed = append(changed, rec(i, consensus.StatusOnline, 12, 6, 16, "nvidia"))
			}
			applyFSM(b, fsm, 11, changed...)
			b.ReportAllocs()
			for b.Loop() {
				v := buildView(fsm, nil, old)
				if len(v.online) != n {
					b.Fatal(len(v.online))
				}
			}
		})
	}
}

// BenchmarkAPI_ViewFilter is a request's work when its filter is not in
// the view's answer cache: filter the precomputed slice and concatenate
// the matching agents' bytes, with their sample ages.
func BenchmarkAPI_ViewFilter(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			v := buildView(benchRegistry(b, n), nil, nil)
			f := capacityFilter{minVRAM: 16, minCores: 4}
			now := time.Now()
			buf := appendEntries(nil, v.matching(&f), now)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf = appendEntries(buf[:0], v.matching(&f), now)
			}
		})
	}
}
