package api

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/chiffon-dev/chiffon/consensus"
)

// scrapeFamilies GETs base/metrics and parses it with Prometheus's own text
// parser, as a Prometheus server would.
func scrapeFamilies(t testing.TB, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// sample returns the value of the series of family name whose labels
// include want, and whether there is exactly one such series.
func sample(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	var v float64
	n := 0
	for _, m := range mfs[name].GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		match := true
		for k, w := range want {
			if labels[k] != w {
				match = false
			}
		}
		if match {
			n++
			v = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return v, n == 1
}

// TestFleetMetrics_ReportTheRegistry: /metrics reports each agent's and
// GPU's capacity in base units, one-hot statuses, fleet totals over online
// desktops only, and the work queue, and passes promlint.
func TestFleetMetrics_ReportTheRegistry(t *testing.T) {
	st := newWorkStore()
	owned := rec(2, consensus.StatusOffline, 40, 16, 64, "nvidia")
	owned.Owner = consensus.OwnerActive
	applyFSM(t, st.fsm, 1,
		rec(1, consensus.StatusOnline, 20, 8, 32, "nvidia"),
		owned,
		rec(3, consensus.StatusOnline, 0, 4, 8, "none"),
		rec(4, consensus.StatusOnline, 24, 2, 4, "nvidia", "orchestrator"),
	)
	st.index = 1
	submitted := time.Now().Add(-90 * time.Second)
	items := []consensus.WorkItem{{WorkID: "old", MaxAttempts: 1}, {WorkID: "new", MaxAttempts: 1}, {WorkID: "done", MaxAttempts: 1}}
	if _, err := st.Apply(consensus.SubmitWork{At: submitted, Items: items[:1]}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(consensus.SubmitWork{At: time.Now(), Items: items[1:]}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(consensus.UpdateWork{At: time.Now(), Transitions: []consensus.WorkTransition{{WorkID: "done", To: consensus.WorkFailed, Error: "x"}}}, 0); err != nil {
		t.Fatal(err)
	}
	s, hs := newTestServer(t, st.fsm, newLeaderRaft("l"), func(c *Config) { c.Work = st.fsm })
	mfs := scrapeFamilies(t, hs.URL)

	const gib = 1 << 30
	d1 := map[string]string{"agent": "desk-1", "agent_id": agentID(1), "gpu_type": "nvidia"}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	cases := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"chiffon_agent_status", with(d1, "status", "online"), 1},
		{"chiffon_agent_status", with(d1, "status", "offline"), 0},
		{"chiffon_agent_status", map[string]string{"agent": "desk-2", "status": "offline"}, 1},
		{"chiffon_agent_owner", map[string]string{"agent": "desk-2", "owner": "active"}, 1},
		{"chiffon_agent_owner", map[string]string{"agent": "desk-2", "owner": "idle"}, 0},
		{"chiffon_agent_owner", with(d1, "owner", "unknown"), 1},
		{"chiffon_agent_cpu_cores_free", d1, 8},
		{"chiffon_agent_cpu_cores", d1, 16},
		{"chiffon_agent_cpu_load1", d1, 1},
		{"chiffon_agent_memory_available_bytes", d1, 32 * gib},
		{"chiffon_agent_memory_used_ratio", d1, 0.4},
		{"chiffon_agent_last_heartbeat_timestamp_seconds", d1, float64(baseTime.Add(time.Second).Unix())},
		{"chiffon_gpu_memory_total_bytes", with(d1, "gpu", "0", "model", "GPU A"), 24 * gib},
		{"chiffon_gpu_memory_free_bytes", with(d1, "gpu", "0", "model", "GPU A"), 20 * gib},
		{"chiffon_gpu_memory_free_bytes", with(d1, "gpu", "1", "model", "GPU B"), 10 * gib},
		{"chiffon_gpu_utilization_ratio", with(d1, "gpu", "1"), 0.5},
		// Online desktops only: desk-1 (30 GiB free of 48) and desk-3 (no
		// GPU); not the offline desk-2 nor the orchestrator desk-4.
		{"chiffon_fleet_gpu_memory_free_bytes", nil, 30 * gib},
		{"chiffon_fleet_gpu_memory_total_bytes", nil, 48 * gib},
		{"chiffon_fleet_cpu_cores_free", nil, 12},
		{"chiffon_fleet_desktops", map[string]string{"status": "online"}, 2},
		{"chiffon_fleet_desktops", map[string]string{"status": "offline"}, 1},
		{"chiffon_fleet_desktops", map[string]string{"status": "left"}, 0},
		{"chiffon_work_items", map[string]string{"status": "pending"}, 2},
		{"chiffon_work_items", map[string]string{"status": "failed"}, 1},
	}
	for _, c := range cases {
		got, ok := sample(mfs, c.name, c.labels)
		if !ok || math.Abs(got-c.want) > 1e-9*math.Max(1, c.want) {
			t.Errorf("%s%v = %v (one series: %v); want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	// The oldest pending item was submitted 90 s ago (the scrape took a
	// moment more).
	if age, ok := sample(mfs, "chiffon_work_pending_oldest_age_seconds", nil); !ok || age < 90 || age > 90+60 {
		t.Errorf("oldest pending age %v s (present %v); want about 90", age, ok)
	}
	// A utilisation the probe could not read (-1) is no series at all.
	applyFSM(t, st.fsm, 10, func() consensus.Record {
		r := rec(5, consensus.StatusOnline, 20, 8, 32, "nvidia")
		r.Metrics.GPUs[0].UtilizationPct = -1
		return r
	}())
	mfs5 := scrapeFamilies(t, hs.URL)
	if v, ok := sample(mfs5, "chiffon_gpu_utilization_ratio", map[string]string{"agent": "desk-5", "gpu": "0"}); ok {
		t.Errorf("unknown utilisation reported as %v", v)
	}
	if _, ok := sample(mfs5, "chiffon_gpu_utilization_ratio", map[string]string{"agent": "desk-5", "gpu": "1"}); !ok {
		t.Error("the other GPU's utilisation is missing")
	}
	// Every agent has one series per status, exactly one of them 1.
	if n := len(mfs["chiffon_agent_status"].GetMetric()); n != 4*len(consensus.Statuses) {
		t.Errorf("%d chiffon_agent_status series; want %d", n, 4*len(consensus.Statuses))
	}

	// promtool check metrics' rules (client_golang's promlint), on the
	// fleet collector alone and on the whole registry.
	fc := &fleetCollector{reg: st.fsm, work: st.fsm, now: time.Now}
	if problems, err := testutil.CollectAndLint(fc); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
	if problems, err := testutil.GatherAndLint(s.prom); err != nil || len(problems) > 0 {
		t.Errorf("promlint on /metrics: %v %v", problems, err)
	}
}

// TestFleetMetrics_FollowChanges: a scrape reads the registry as it is
// now: a status change moves the one-hot series and the fleet totals.
func TestFleetMetrics_FollowChanges(t *testing.T) {
	fsm, _, _, base := leaderFixture(t, nil)
	before, _ := sample(scrapeFamilies(t, base), "chiffon_fleet_gpu_memory_free_bytes", nil)
	r := rec(1, consensus.StatusOffline, 20, 8, 32, "nvidia")
	applyFSM(t, fsm, 6, r)
	mfs := scrapeFamilies(t, base)
	if v, ok := sample(mfs, "chiffon_agent_status", map[string]string{"agent_id": agentID(1), "status": "offline"}); !ok || v != 1 {
		t.Errorf("desk-1 offline series = %v (present %v); want 1", v, ok)
	}
	if v, ok := sample(mfs, "chiffon_agent_status", map[string]string{"agent_id": agentID(1), "status": "online"}); !ok || v != 0 {
		t.Errorf("desk-1 online series = %v (present %v); want 0", v, ok)
	}
	after, _ := sample(mfs, "chiffon_fleet_gpu_memory_free_bytes", nil)
	if want := before - 30*(1<<30); math.Abs(after-want) > 1 {
		t.Errorf("fleet free VRAM %v after desk-1 went offline; want %v (was %v)", after, want, before)
	}
}

// TestFleetMetrics_NoWorkReader: without work items configured there are
// no work series, and the scrape still works.
func TestFleetMetrics_NoWorkReader(t *testing.T) {
	_, _, _, base := leaderFixture(t, nil)
	mfs := scrapeFamilies(t, base)
	if _, ok := mfs["chiffon_work_items"]; ok {
		t.Error("chiffon_work_items without a WorkReader")
	}
	if _, ok := mfs["chiffon_fleet_desktops"]; !ok {
		t.Error("no chiffon_fleet_desktops")
	}
}

// BenchmarkFleetMetrics_Scrape measures a whole GET /metrics (every
// collector, text encoding) at 1,000 and 10,000 agents with two GPUs each.
func BenchmarkFleetMetrics_Scrape(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			fsm := benchRegistry(b, n)
			s, err := New(testConfig(b, fsm, newLeaderRaft("l"), noAddrs))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			h := s.Handler()
			req := httptest.NewRequest("GET", "/metrics", nil)
			w := &nullWriter{h: http.Header{}}
			h.ServeHTTP(w, req)
			if w.code != 0 && w.code != 200 {
				b.Fatalf("GET /metrics: %d", w.code)
			}
			size := w.n
			for b.Loop() {
				h.ServeHTTP(w, req)
			}
			b.ReportMetric(float64(size), "body-bytes")
		})
	}
}
