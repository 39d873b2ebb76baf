package api

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
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
// leader, at registry sizes of 100, 1,000 and 10,000 agents.
func BenchmarkAPI_AvailableCapacity(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
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
	for _, n := range []int{100, 1000, 10000} {
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
	for _, n := range []int{100, 1000, 10000} {
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
	for _, n := range []int{100, 1000, 10000} {
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

// BenchmarkAPI_GzipAnswer compresses the answer listing every online
// desktop (no bounds), as a request with Accept-Encoding: gzip makes it
// once per view, and reports the bytes per agent plain and gzip: for
// benchRegistry's near-identical records ("uniform"), and for records with
// random agent_ids, names, load, memory and free VRAM ("varied"), closer
// to a real fleet's.
func BenchmarkAPI_GzipAnswer(b *testing.B) {
	for _, kind := range []string{"uniform", "varied"} {
		for _, n := range []int{100, 1000, 10000} {
			b.Run(fmt.Sprintf("%s/agents=%d", kind, n), func(b *testing.B) {
				fsm := benchRegistry(b, n)
				if kind == "varied" {
					fsm = variedRegistry(b, n)
				}
				v := buildView(fsm, nil, nil)
				plain := v.available(capacityFilter{}, time.Now()).plain
				gz := gzipBytes(plain)
				b.SetBytes(int64(len(plain)))
				b.ReportAllocs()
				for b.Loop() {
					gzipBytes(plain)
				}
				b.ReportMetric(float64(len(plain))/float64(n), "plain-bytes/agent")
				b.ReportMetric(float64(len(gz))/float64(n), "gzip-bytes/agent")
			})
		}
	}
}

// variedRegistry returns an FSM with n online desktops whose ids, names
// and metrics are random (seeded).
func variedRegistry(b *testing.B, n int) *consensus.FSM {
	rng := rand.New(rand.NewPCG(1, 2))
	gpus := []string{"NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3080", "NVIDIA RTX A4000", "AMD Radeon RX 7900 XTX"}
	round := func(f float64) float64 { return math.Round(f*100) / 100 }
	recs := make([]consensus.Record, n)
	for i := range recs {
		r := rec(i, consensus.StatusOnline, round(rng.Float64()*24), float64(rng.IntN(32)), round(rng.Float64()*64), "nvidia")
		r.AgentID = fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), rng.IntN(1<<12), rng.Uint64()&(1<<48-1))
		r.Name = fmt.Sprintf("ws-%s-%d", []string{"lab", "render", "ml", "dev"}[rng.IntN(4)], rng.IntN(100000))
		r.Metrics.CPULoad1Min = round(rng.Float64() * 8)
		r.Metrics.MemoryPercent = round(rng.Float64() * 100)
		for g := range r.Metrics.GPUs {
			r.Metrics.GPUs[g].Name = gpus[rng.IntN(len(gpus))]
			r.Metrics.GPUs[g].UtilizationPct = round(rng.Float64() * 100)
		}
		r.LastHeartbeatAt = baseTime.Add(time.Duration(rng.Int64N(int64(30 * time.Second))))
		recs[i] = r
	}
	fsm := consensus.NewFSM()
	applyFSM(b, fsm, 10, recs...)
	return fsm
}
