package node_test

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node/nodetest"
)

var acceptedPushes = regexp.MustCompile(`chiffon_telemetry_pushes_total\{result="accepted"\} (\d+)`)

// pushesAccepted scrapes an orchestrator's /metrics for the telemetry
// pushes it took as leader.
func pushesAccepted(addr string) (int, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	m := acceptedPushes.FindSubmatch(body)
	if m == nil {
		return 0, nil
	}
	return strconv.Atoi(string(m[1]))
}

// A desktop's tag change reaches the registry through its push to the
// leader, over the real HTTP API on loopback, and the leader counts it.
func TestCluster_TelemetryPushReachesTheLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: nodetest.Names("orch", 3), Desktops: []string{"desk-a"}, Scaled: true})
	tc.WaitLeader(10 * time.Second)
	s := nodetest.DefaultSample(0)
	s.CPUCoresAvailable = 3.5
	tc.Sampler("desk-a").Set(s, nil)
	id := tc.Node("desk-a").AgentID()
	testwait.Until(t, 10*time.Second, "the change in the leader's registry and a push accepted", func() (bool, string) {
		l := tc.Leader()
		if l == nil {
			return false, "no leader"
		}
		rec, _ := l.Store().FSM().Get(id)
		n, err := pushesAccepted(l.APIAddr())
		if err != nil {
			return false, err.Error()
		}
		return rec.Metrics.CPUCoresAvailable == 3.5 && n >= 1, "cores " + strconv.FormatFloat(rec.Metrics.CPUCoresAvailable, 'f', -1, 64) + ", pushes accepted " + strconv.Itoa(n)
	})
}
