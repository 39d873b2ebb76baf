package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// jsonNames lists the JSON keys of struct type t, embedded structs
// flattened as encoding/json does.
func jsonNames(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonNames(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// wirePairs are the registry types the API renders and their wire types.
var wirePairs = []struct{ registry, wire any }{
	{consensus.Record{}, apitype.Agent{}},
	{consensus.ResourceMetrics{}, apitype.ResourceMetrics{}},
	{consensus.GPU{}, apitype.GPU{}},
	{consensus.WorkItem{}, apitype.WorkItem{}},
	{consensus.Requirements{}, apitype.Requirements{}},
}

// TestAPI_WireTypesCoverRegistry fails when a field is added to a registry
// type without its counterpart in the wire type: the CLI would never see
// it.
func TestAPI_WireTypesCoverRegistry(t *testing.T) {
	for _, p := range wirePairs {
		rt, wt := reflect.TypeOf(p.registry), reflect.TypeOf(p.wire)
		want, got := jsonNames(rt), jsonNames(wt)
		for name, ft := range want {
			gt, ok := got[name]
			if !ok {
				t.Errorf("%v has %q, %v has not", rt, name, wt)
				continue
			}
			// Same kind of value: a string stays a string, a list a list;
			// an optional value may be a pointer on the wire (null when
			// unset).
			if gt.Kind() == reflect.Pointer && ft.Kind() != reflect.Pointer {
				gt = gt.Elem()
			}
			if ft.Kind() != gt.Kind() {
				t.Errorf("%v.%s is a %v, %v's a %v", rt, name, ft.Kind(), wt, gt.Kind())
			}
		}
	}
}

// requireAllSet fails for every zero field of v (recursively), so that a
// fixture keeps exercising every field as types grow.
func requireAllSet(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			if v.IsZero() {
				t.Errorf("fixture leaves %s zero", path)
			}
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				requireAllSet(t, path+"."+v.Type().Field(i).Name, v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			t.Errorf("fixture leaves %s empty", path)
		}
		for i := range v.Len() {
			requireAllSet(t, path, v.Index(i))
		}
	default:
		if v.IsZero() {
			t.Errorf("fixture leaves %s zero", path)
		}
	}
}

// sameObject reports whether two JSON objects have the same keys and
// values, in any order.
func sameObject(a, b []byte) bool {
	var x, y map[string]any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return mapsEqualJSON(x, y)
}

// fullRecord is a registry record with every field set.
func fullRecord() consensus.Record {
	r := rec(1, consensus.StatusSuspect, 10, 4, 8, "nvidia", "desktop", "orchestrator")
	r.APIAddr, r.RaftAddr, r.ModifyIndex = "10.0.0.1:8480", "10.0.0.1:8300", 9
	r.WorkSlots, r.WorkAddr = 2, "10.0.0.1:7380"
	r.Metrics.CPULoad5Min, r.Metrics.CPULoad15Min = 2, 3
	r.Metrics.GPUs[0].Index = 2 // the driver's numbering need not start at 0
	r.FirstSeenAt, r.StatusChangedAt = baseTime.Add(-time.Hour), baseTime.Add(-time.Minute)
	r.UnreachableSince = baseTime.Add(-30 * time.Second)
	r.SampledAt = baseTime.Add(-2 * time.Second)
	r.Owner, r.OwnerSince, r.MAC = consensus.OwnerIdle, baseTime.Add(-20*time.Minute), "0a:1b:2c:3d:4e:5f"
	r.FlapScore = 1.5
	r.WakeSentAt = baseTime.Add(-5 * time.Minute)
	r.History = []consensus.Transition{{At: baseTime.Add(-time.Minute), From: consensus.StatusOnline, To: consensus.StatusSuspect}}
	return r
}

// TestAPI_AgentRoundTrip: GET /agents/{id} of a record with every field
// set answers every field, with the registry's own values, and the
// client's type keeps them all.
func TestAPI_AgentRoundTrip(t *testing.T) {
	r := fullRecord()
	requireAllSet(t, "Record", reflect.ValueOf(r))
	fsm := consensus.NewFSM()
	applyFSM(t, fsm, 9, r)
	// The flap score as stored: decayed to now it would be 0 for this
	// fixture's old times (decay: TestAPI_AgentFlapScoreAndHistory).
	_, hs := newTestServer(t, fsm, newLeaderRaft("l"), func(c *Config) { c.FlapHalfLife = 0 })

	stored, _ := fsm.Get(r.AgentID)
	// The record's own keys, plus "reachable", derived from
	// unreachable_since.
	var reg map[string]any
	b, _ := json.Marshal(stored)
	if err := json.Unmarshal(b, &reg); err != nil {
		t.Fatal(err)
	}
	reg["reachable"] = false
	before := time.Now()
	body := do(t, nil, "GET", hs.URL+"/v1/agents/"+r.AgentID, nil).body
	// and "sample_age_s", derived from sampled_at and the clock.
	var ans struct {
		Age *float64 `json:"sample_age_s"`
	}
	json.Unmarshal(body, &ans)
	lo, hi := before.Sub(r.SampledAt).Seconds()-0.05, time.Since(r.SampledAt).Seconds()+0.05
	if ans.Age == nil || *ans.Age < lo || *ans.Age > hi {
		t.Errorf("sample_age_s %v, want %.1f to %.1f", ans.Age, lo, hi)
	} else {
		reg["sample_age_s"] = *ans.Age
	}
	regJSON, _ := json.Marshal(reg)
	if !sameObject(body, regJSON) {
		t.Errorf("answer differs from the record:\n got %s\nwant %s", body, regJSON)
	}
	var a apitype.Agent
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatal(err)
	}
	if a.Reachable || a.UnreachableSince == nil || !a.UnreachableSince.Equal(r.UnreachableSince) {
		t.Errorf("reachable %v since %v; want false since %v", a.Reachable, a.UnreachableSince, r.UnreachableSince)
	}
	a.Reachable = true // false exactly when unreachable_since is set: one of them is always zero
	requireAllSet(t, "apitype.Agent", reflect.ValueOf(a))
	if a.WorkSlots != 2 || a.WorkAddr != "10.0.0.1:7380" {
		t.Errorf("work_slots %d, work_addr %q", a.WorkSlots, a.WorkAddr)
	}
}

// TestAPI_WorkItemRoundTrip: a work item with every field set renders
// with every field, under the registry's own keys and values.
func TestAPI_WorkItemRoundTrip(t *testing.T) {
	w := consensus.WorkItem{
		WorkID: "job-1", Requirements: consensus.Requirements{MinGPUVRAMGB: 8, MinCPUCores: 2, GPUType: "nvidia"},
		PinAgentID: agentID(1), Payload: json.RawMessage(`{"n":1}`), ReplyTo: "replies", CorrelationID: "c-1",
		Status: consensus.WorkFailed, Attempts: 2, MaxAttempts: 3, AgentID: agentID(1), GPUIndex: 1,
		Deadline: baseTime.Add(time.Hour), SubmittedAt: baseTime, AssignedAt: baseTime.Add(time.Second),
		LeaseExpiresAt: baseTime.Add(11 * time.Second),
		StartedAt:      baseTime.Add(2 * time.Second), FinishedAt: baseTime.Add(3 * time.Second),
		ExitCode: 3, Output: "out", Error: "exit status 3", DeadLetter: true,
		Published: true, PublishedAt: baseTime.Add(4 * time.Second), CreateIndex: 5, ModifyIndex: 9,
		Events: []consensus.WorkEvent{{At: baseTime.Add(time.Second / 2), Event: consensus.WorkEventWake, AgentID: agentID(1), Detail: "woken"}},
	}
	requireAllSet(t, "WorkItem", reflect.ValueOf(w))
	want, _ := json.Marshal(w)
	got, _ := json.Marshal(workOf(&w))
	if !sameObject(got, want) {
		t.Errorf("rendered work item differs:\n got %s\nwant %s", got, want)
	}
	var back apitype.WorkItem
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	requireAllSet(t, "apitype.WorkItem", reflect.ValueOf(back))
}
