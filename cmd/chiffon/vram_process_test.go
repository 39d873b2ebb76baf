package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
)

// vramCapacity is the part of GET /v1/agents/{id}/capacity the VRAM test
// reads.
type vramCapacity struct {
	GPUs []struct {
		VRAMFreeGB float64 `json:"vram_free_gb"`
	} `json:"gpus"`
	Reserved struct {
		Items int `json:"items"`
	} `json:"reserved"`
	SampleAgeS *float64 `json:"sample_age_s"`
}

// TestProcess_VRAMPushedAndNeverOverCommitted is issue 13's VRAM
// done-when, with real processes and a real broker: one orchestrator and
// two desktops with one 24 GB GPU each (metrics files; 4 GB in use at
// first).
//
//  1. vr-watch has a 30 s heartbeat. An outside process takes 12 GB on
//     it (its metrics file says 8 GB free): the capacity API shows it
//     within 2 s, long before the heartbeat.
//  2. vr-work runs work, and samples only when its VRAM changes (a 10 m
//     heartbeat), so the test decides when samples are taken. Its owner
//     uses 12 GB too (8 free). Three 3 GB items, then one CPU-only item,
//     are submitted between samples: two run, the third waits. The
//     CPU-only item, placed after it in submission order, proves that
//     placement looked at the third and found no room (Plan places
//     pending work oldest first in one pass).
//  3. vr-work's owner gives 10 GB back: 12 GB free with the two items'
//     6 GB in use. The push brings the sample; the ledger counts the two
//     running items inside it (they started before it) and places the
//     third: 12 − 3 = 9 GB offered, not 12 − 9 = 3.
func TestProcess_VRAMPushedAndNeverOverCommitted(t *testing.T) {
	if testing.Short() {
		t.Skip("process test with a real broker")
	}
	broker := dispatchtest.StartForTest(t)
	const ipPrefix = "127.0.43"
	orch := newOrchSpec(t, "vr-orch", ipPrefix+".1", 1, "")
	queue := "chiffon.work.vram"
	orch.args = append(orch.args, "-amqp-url", broker.URL, "-amqp-work-queue", queue)
	orch.start(t)

	dir := t.TempDir()
	started, release := filepath.Join(dir, "started"), filepath.Join(dir, "release")
	handler := fmt.Sprintf(`echo "$CHIFFON_WORK_ID" >> '%s'; while [ ! -e '%s' ]; do sleep 0.05; done; cat`, started, release)
	gpu := func(free float64) []byte {
		return metricsJSON(t, 0, 16, 32, "nvidia", gpuJSON{0, "NVIDIA GeForce RTX 4090", 24, free, 0})
	}
	watch := newNodeSpec(t, "vr-watch", ipPrefix+".2").withMetrics(t, gpu(20))
	watch.args = []string{"-retry-join", orch.gossipAddr, "-retry-interval", "200ms", "-heartbeat-interval", "30s"}
	watch.start(t)
	work := newNodeSpec(t, "vr-work", ipPrefix+".3").withMetrics(t, gpu(8))
	work.args = []string{"-retry-join", orch.gossipAddr, "-retry-interval", "200ms", "-heartbeat-interval", "10m",
		"-work-handler", handler, "-work-concurrency", "4",
		"-work-addr", fmt.Sprintf("%s:%d", ipPrefix+".3", freeTCPPort(t, ipPrefix+".3"))}
	work.start(t)

	base := "https://" + orch.httpAddr
	ids := map[string]string{}
	waitFor(t, 60*time.Second, "both desktops online in the registry", func() (bool, string) {
		list, err := agentsOn(orch.httpAddr)
		ids["vr-watch"], ids["vr-work"] = list["vr-watch"].AgentID, list["vr-work"].AgentID
		return err == nil && list["vr-watch"].Status == "online" && list["vr-work"].Status == "online", fmt.Sprint(list, err)
	})
	capacity := func(name string) (vramCapacity, string) {
		var c vramCapacity
		code, err := getJSON(base+"/v1/agents/"+ids[name]+"/capacity", &c)
		if err != nil || code != 200 || len(c.GPUs) != 1 {
			return c, fmt.Sprintf("code %d, err %v, %+v", code, err, c)
		}
		return c, fmt.Sprintf("%+v", c)
	}
	freeIs := func(name string, gb float64) func() (bool, string) {
		return func() (bool, string) {
			c, s := capacity(name)
			return len(c.GPUs) == 1 && c.GPUs[0].VRAMFreeGB == gb, s
		}
	}
	waitFor(t, 30*time.Second, "vr-watch's 20 GB free in the capacity API", freeIs("vr-watch", 20))

	// 1. The owner takes 12 GB on vr-watch.
	writeFileAtomic(t, watch.metricsFile, gpu(8))
	took := waitFor(t, 2*time.Second, "the outside process's use in the capacity API", freeIs("vr-watch", 8))
	t.Logf("VRAM taken outside Chiffon shown by the capacity API after %s (heartbeat 30 s)", took.Round(10*time.Millisecond))
	if c, _ := capacity("vr-watch"); c.SampleAgeS == nil || *c.SampleAgeS > 2 {
		t.Errorf("sample_age_s %v right after a push, want at most 2", c.SampleAgeS)
	}

	// 2. Work on vr-work between samples.
	waitFor(t, 30*time.Second, "vr-work's 8 GB free in the capacity API", freeIs("vr-work", 8))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prod := &noLossProducer{url: broker.URL, queue: queue}
	defer prod.close()
	var batch []noLossRequest
	for _, w := range []string{"g1", "g2", "g3"} {
		batch = append(batch, noLossRequest{workID: w,
			body: fmt.Appendf(nil, `{"work_id":%q,"requirements":{"min_gpu_vram_gb":3},"payload":{"n":1}}`, w)})
	}
	if err := prod.publish(ctx, batch); err != nil {
		t.Fatal(err)
	}
	status := func(w string) string {
		var fw fenceWork
		if _, err := getJSON(base+"/v1/work/"+w, &fw); err != nil {
			return err.Error()
		}
		return fw.Status
	}
	waitFor(t, 30*time.Second, "g1 and g2 running", func() (bool, string) {
		return status("g1") == "running" && status("g2") == "running", status("g1") + " " + status("g2") + " " + status("g3")
	})
	if err := prod.publish(ctx, []noLossRequest{{workID: "cpu", body: []byte(`{"work_id":"cpu","payload":{"n":2}}`)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the CPU-only item placed after g3", func() (bool, string) {
		s := status("cpu")
		return s == "assigned" || s == "running", s
	})
	if s := status("g3"); s != "pending" {
		t.Fatalf("g3 is %s with 6 of 8 offered GB held: the GPU would be over-committed", s)
	}
	if c, s := capacity("vr-work"); len(c.GPUs) != 1 || c.GPUs[0].VRAMFreeGB != 2 || c.Reserved.Items != 3 {
		t.Fatalf("capacity with g1, g2 and cpu placed: %s; want 2 GB free and 3 items", s)
	}

	// 3. The owner gives 10 GB back.
	writeFileAtomic(t, work.metricsFile, gpu(12))
	waitFor(t, 10*time.Second, "g3 placed once the owner gave VRAM back", func() (bool, string) {
		s := status("g3")
		return s == "assigned" || s == "running", s
	})
	waitFor(t, 10*time.Second, "9 GB offered with g3 placed", freeIs("vr-work", 9))

	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "every item done", func() (bool, string) {
		var all []string
		done := true
		for _, w := range []string{"g1", "g2", "g3", "cpu"} {
			s := status(w)
			all = append(all, w+"="+s)
			done = done && s == "succeeded"
		}
		return done, strings.Join(all, " ")
	})
	b, _ := os.ReadFile(started)
	if runs := strings.Fields(string(b)); len(runs) != 4 {
		t.Fatalf("handler runs %v, want each of the four items once", runs)
	}
}
