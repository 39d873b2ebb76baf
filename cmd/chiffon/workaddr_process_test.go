package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
)

// TestProcess_DefaultWorkAddrFollowsBind runs two desktops with a work
// handler and no -work-addr, bound to 127.0.3.2 and 127.0.3.3, beside one
// orchestrator with the bridge. Both start (with a fixed loopback default
// the second could not listen), advertise a work address on their own IP
// with port 7380, and run the work the leader places on each.
func TestProcess_DefaultWorkAddrFollowsBind(t *testing.T) {
	if testing.Short() {
		t.Skip("process test with a real broker")
	}
	t.Parallel()
	broker := dispatchtest.StartForTest(t)
	orch := newOrchSpec(t, "wa-orch", "127.0.3.1", 1, "")
	orch.args = append(append(orch.args, "-amqp-url", broker.URL), fastTimings...)
	orch.start(t).waitReady(t)

	desks := map[string]string{"wa-desk-2": "127.0.3.2", "wa-desk-3": "127.0.3.3"}
	for name, ip := range desks {
		s := newNodeSpec(t, name, ip).withMetrics(t,
			metricsJSON(t, 1, 8, 16, "nvidia", gpuJSON{0, "NVIDIA RTX A4000", 16, 14, 0}))
		s.args = append([]string{"-retry-join", orch.gossipAddr, "-retry-interval", "200ms",
			"-work-handler", "cat >/dev/null; echo ran on " + name}, fastTimings...)
		s.start(t).waitReady(t)
	}

	// The registry shows both online, each with its own work address.
	type agent struct {
		AgentID  string `json:"agent_id"`
		Name     string `json:"name"`
		Status   string `json:"status"`
		WorkAddr string `json:"work_addr"`
	}
	ids := map[string]string{}
	waitFor(t, 30*time.Second, "both desktops online with a work address on their own IP", func() (bool, string) {
		var list []agent
		if _, err := getJSON("https://"+orch.httpAddr+"/agents?stale", &list); err != nil {
			return false, err.Error()
		}
		ok := 0
		for _, a := range list {
			if ip, found := desks[a.Name]; found && a.Status == "online" && a.WorkAddr == "https://"+ip+":7380" { // secured: https
				ids[a.Name] = a.AgentID
				ok++
			}
		}
		return ok == len(desks), fmt.Sprintf("%+v", list)
	})

	// Work pinned to each desktop runs there.
	for name, id := range ids {
		waitFor(t, 60*time.Second, "work pinned to "+name+" to succeed", func() (bool, string) {
			out, errOut, err := runCmd(chiffonBinary(t), "submit", "-amqp-url", broker.URL, "-agent", id,
				"-payload", `{"n":1}`, "-wait", "10s")
			if err != nil {
				return false, fmt.Sprintf("%v: %s%s", err, out, errOut)
			}
			var res struct {
				Status  string `json:"status"`
				AgentID string `json:"agent_id"`
				Output  string `json:"output"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				return false, fmt.Sprintf("undecodable result %q: %v", out, err)
			}
			return res.Status == "succeeded" && res.AgentID == id && strings.TrimSpace(res.Output) == "ran on "+name,
				fmt.Sprintf("%+v", res)
		})
	}
}
