package api

import (
	"math"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

// FuzzParseQuery feeds arbitrary query strings through every parser a
// capacity or agents request runs. It must never panic, and whatever it
// accepts must be within the documented ranges.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"", "stale", "consistent=true", "stale&consistent", "index=5&wait=30s", "index=1&wait=1h",
		"min_gpu_vram_gb=16&min_cpu_cores=4&gpu_type=nvidia&vram=total&min_memory_available_gb=1.5",
		"min_gpu_vram_gb=-1", "min_gpu_vram_gb=NaN", "min_cpu_cores=1e309", "gpu_type=NVIDIA", "status=online",
		"wait=5s", "index=18446744073709551616", "%zz", "a=1&a=2", "vram=Single", "stale=0",
	} {
		f.Add(s)
	}
	const defWait, maxWait = 5 * time.Minute, 5 * time.Minute
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		if err := checkParams(q, capacityParams); err == nil {
			for k, vs := range q {
				if !slices.Contains(capacityParams, k) || len(vs) != 1 {
					t.Fatalf("checkParams let %q=%v through", k, vs)
				}
			}
		}
		if o, err := parseQueryOptions(q, defWait, maxWait); err == nil {
			if o.wait < 0 || o.wait > maxWait {
				t.Fatalf("wait %s out of range", o.wait)
			}
			if o.blocking != q.Has(apitype.ParamIndex) {
				t.Fatalf("blocking %v with index given %v", o.blocking, q.Has(apitype.ParamIndex))
			}
			if !o.blocking && o.wait != 0 {
				t.Fatalf("non-blocking query with wait %s", o.wait)
			}
		}
		if c, err := parseCapacityFilter(q); err == nil {
			for _, b := range []float64{c.minVRAM, c.minCores, c.minMem} {
				if b < 0 || math.IsNaN(b) || math.IsInf(b, 0) {
					t.Fatalf("bound %v accepted", b)
				}
			}
			if c.gpuType != "" && !slices.Contains(apitype.GPUTypes, c.gpuType) {
				t.Fatalf("gpu_type %q accepted", c.gpuType)
			}
		}
		if s, err := parseStatus(q); err == nil && s != "" && !slices.Contains(apitype.Statuses, s) {
			t.Fatalf("status %q accepted", s)
		}
	})
}

// FuzzParseAgentID checks that only canonical UUIDs pass, lower-cased.
func FuzzParseAgentID(f *testing.F) {
	for _, s := range []string{agentID(1), strings.ToUpper(agentID(2)), "", "x", "{" + agentID(3) + "}",
		"urn:uuid:" + agentID(4), "3f2c1e9a6b1d4c1e9a570e2d6c1b7f10", "3f2c1e9a-6b1d-4c1e-9a57-0e2d6c1b7f1g"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := parseAgentID(s)
		if err != nil {
			return
		}
		u, perr := uuid.Parse(id)
		if perr != nil || u.String() != id {
			t.Fatalf("%q accepted as %q, which is not a canonical UUID (%v)", s, id, perr)
		}
		if !strings.EqualFold(id, s) {
			t.Fatalf("%q became %q", s, id)
		}
	})
}
