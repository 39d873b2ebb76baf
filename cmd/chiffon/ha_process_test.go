package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api"
)

// orchSpec adds raft and HTTP addresses to a node spec.
type orchSpec struct {
	*nodeSpec
	raftAddr, httpAddr string
}

func newOrchSpec(t *testing.T, name, ip string, expect int, join string) *orchSpec {
	s := &orchSpec{nodeSpec: newNodeSpec(t, name, ip)}
	s.raftAddr = net.JoinHostPort(ip, strconv.Itoa(freeTCPPort(t, ip)))
	s.httpAddr = net.JoinHostPort(ip, strconv.Itoa(freeTCPPort(t, ip)))
	s.secure = append([]string{"-encrypt", testGossipKey}, pki(t).serverArgs(t, name)...)
	s.args = []string{"-role", "orchestrator", "-bootstrap-expect", strconv.Itoa(expect),
		"-raft-addr", s.raftAddr, "-http-addr", s.httpAddr}
	if join != "" {
		s.args = append(s.args, "-retry-join", join, "-retry-interval", "200ms")
	}
	return s
}

// startOrchs starts three orchestrators (bootstrap-expect 3) named
// prefix1..3 on ipPrefix.1..3, the second and third joining the first,
// each with fastTimings and args, and returns their specs and processes.
func startOrchs(t *testing.T, prefix, ipPrefix string, args ...string) ([]*orchSpec, map[string]*proc) {
	var orchs []*orchSpec
	procs := map[string]*proc{}
	for i := range 3 {
		join := ""
		if i > 0 {
			join = orchs[0].gossipAddr
		}
		s := newOrchSpec(t, fmt.Sprintf("%s%d", prefix, i+1), fmt.Sprintf("%s.%d", ipPrefix, i+1), 3, join)
		s.args = append(append(s.args, args...), fastTimings...)
		orchs = append(orchs, s)
		procs[s.name] = s.start(t)
	}
	return orchs, procs
}

// getJSON GETs url (https: the orchestrators are secured) into v with
// the run's client certificate, and returns the status code.
func getJSON(url string, v any) (int, error) {
	hc, err := pkiHTTPClient()
	if err != nil {
		return 0, err
	}
	resp, err := hc.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

type leaderInfo struct {
	ID       string `json:"id"`
	HTTPAddr string `json:"http_addr"`
}

type agentView struct {
	AgentID string `json:"agent_id"`
	Name    string `json:"name"`
	Status  string `json:"status"`
}

// agentsOn lists the registry as one orchestrator's local replica has it.
func agentsOn(httpAddr string) (map[string]agentView, error) {
	var list []agentView
	if _, err := getJSON("https://"+httpAddr+"/agents?stale", &list); err != nil {
		return nil, err
	}
	out := map[string]agentView{}
	for _, a := range list {
		out[a.Name] = a
	}
	return out, nil
}

func leaderOf(httpAddr string) string {
	var l leaderInfo
	if code, err := getJSON("https://"+httpAddr+"/v1/status/leader", &l); err != nil || code != 200 {
		return ""
	}
	return l.HTTPAddr
}

// waitAgreedLeader waits up to within for a raft leader every
// orchestrator of orchs names, and returns it.
func waitAgreedLeader(t *testing.T, orchs []*orchSpec, within time.Duration) *orchSpec {
	t.Helper()
	var leader *orchSpec
	waitFor(t, within, "a raft leader known to all orchestrators", func() (bool, string) {
		o, seen := agreedLeader(orchs, nil)
		leader = o
		return o != nil, seen
	})
	return leader
}

// agreedLeader returns the orchestrator that every one of orchs (but
// exclude, which may be nil) names as the raft leader, or nil and what
// they named.
func agreedLeader(orchs []*orchSpec, exclude *orchSpec) (*orchSpec, string) {
	seen := map[string]bool{}
	for _, o := range orchs {
		if o != exclude {
			seen[leaderOf(o.httpAddr)] = true
		}
	}
	if len(seen) == 1 {
		for _, o := range orchs {
			if seen[o.httpAddr] && o != exclude {
				return o, o.name
			}
		}
	}
	return nil, fmt.Sprint(seen)
}

// TestProcess_OrchestratorFailover runs three orchestrator processes and two
// desktops on 127.0.0.1-5, SIGKILLs the raft leader under steady
// default-mode load on the survivors, and checks what the issue promises:
// a new leader within LeaderWait, no failed request, the registry
// intact, and the old leader back as a follower once restarted.
func TestProcess_OrchestratorFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	t.Parallel()
	orchs, procs := startOrchs(t, "orch", "127.0.0")
	for i, name := range []string{"desk-a", "desk-b"} {
		s := newNodeSpec(t, name, fmt.Sprintf("127.0.0.%d", i+4)).withMetrics(t,
			metricsJSON(t, 1, 16, 32, "nvidia", gpuJSON{Name: "RTX 4090", Total: 24, Free: float64(10 + 10*i)}))
		s.args = append([]string{"-retry-join", orchs[0].gossipAddr, "-retry-interval", "200ms"}, fastTimings...)
		procs[name] = s.start(t)
	}

	leader := waitAgreedLeader(t, orchs, 20*time.Second).httpAddr
	for _, o := range orchs {
		waitFor(t, 20*time.Second, "5 online records on "+o.name, func() (bool, string) {
			a, err := agentsOn(o.httpAddr)
			online := 0
			for _, v := range a {
				if v.Status == "online" {
					online++
				}
			}
			return err == nil && online == 5, fmt.Sprint(a, err)
		})
	}
	var leaderSpec *orchSpec
	var followers []*orchSpec
	for _, o := range orchs {
		if o.httpAddr == leader {
			leaderSpec = o
		} else {
			followers = append(followers, o)
		}
	}

	// Steady default-mode load on both followers (they forward to the leader).
	var ok, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func(f *orchSpec) {
			defer wg.Done()
			url := "https://" + f.httpAddr + "/agents/available-capacity?min_gpu_vram_gb=15"
			for {
				select {
				case <-stop:
					return
				default:
				}
				var list []agentView
				code, err := getJSON(url, &list)
				if err != nil || code != 200 || len(list) != 1 || list[0].Name != "desk-b" {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("code %d err %v list %v", code, err, list))
				} else {
					ok.Add(1)
				}
			}
		}(followers[i%2])
	}
	waitFor(t, 5*time.Second, "load running", func() (bool, string) { return ok.Load() > 20, "" })

	killedAt := time.Now()
	procs[leaderSpec.name].kill()
	var newLeader string
	elapsed := waitFor(t, 10*time.Second, "a new leader", func() (bool, string) {
		newLeader = leaderOf(followers[0].httpAddr)
		return newLeader != "" && newLeader != leader && leaderOf(followers[1].httpAddr) == newLeader, newLeader
	})
	t.Logf("new leader %s %s after SIGKILL of %s", newLeader, elapsed.Round(time.Millisecond), leader)
	// A read waits up to LeaderWait for a leader, so an election within it
	// costs no request (checked below); on an idle machine it takes about
	// a second, on a busy one longer.
	if lw := api.DefaultConfig().LeaderWait; elapsed > lw {
		t.Errorf("new leader after %s; want it within LeaderWait %s", elapsed, lw)
	}
	// Keep the load on for a while after the election.
	waitFor(t, 10*time.Second, "3 s of load after the kill", func() (bool, string) { return time.Since(killedAt) > 3*time.Second, "" })
	close(stop)
	wg.Wait()
	t.Logf("default-mode requests across the failover: %d ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d default-mode requests failed during failover (first: %v); want none", failed.Load(), firstFailure.Load())
	}

	// The registry is intact on the survivors; the dead leader turns suspect.
	for _, f := range followers {
		waitFor(t, 10*time.Second, "registry on "+f.name, func() (bool, string) {
			a, err := agentsOn(f.httpAddr)
			return err == nil && len(a) == 5 && a["desk-a"].Status == "online" && a["desk-b"].Status == "online" &&
				a[leaderSpec.name].Status == "suspect", fmt.Sprint(a, err)
		})
	}

	// The old leader restarts from its data dir and rejoins as a follower.
	procs[leaderSpec.name] = leaderSpec.start(t)
	waitFor(t, 20*time.Second, "the old leader back as a follower, caught up", func() (bool, string) {
		a, err := agentsOn(leaderSpec.httpAddr)
		l := leaderOf(leaderSpec.httpAddr)
		return err == nil && l == newLeader && a[leaderSpec.name].Status == "online" && a["desk-a"].Status == "online",
			fmt.Sprintf("leader %q registry %v err %v", l, a, err)
	})
}

// TestProcess_RealTimingOffline90s is the one real-config liveness run: all
// defaults (1 s SWIM probes, 90 s suspicion timeout), a desktop killed with
// SIGKILL is suspect within seconds and offline 90 s ± 3 s after the kill.
func TestProcess_RealTimingOffline90s(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 90 s")
	}
	t.Parallel()
	orch := newOrchSpec(t, "orch", "127.0.0.6", 1, "")
	procs := []*proc{orch.start(t)}
	for _, name := range []string{"victim", "witness"} {
		s := newNodeSpec(t, name, "127.0.0.7").withMetrics(t, metricsJSON(t, 1, 8, 16, "none"))
		s.args = []string{"-retry-join", orch.gossipAddr, "-retry-interval", "200ms"}
		procs = append(procs, s.start(t))
	}
	waitFor(t, 20*time.Second, "3 online records", func() (bool, string) {
		a, err := agentsOn(orch.httpAddr)
		n := 0
		for _, v := range a {
			if v.Status == "online" {
				n++
			}
		}
		return n == 3, fmt.Sprint(a, err)
	})
	a, _ := agentsOn(orch.httpAddr)
	victimID := a["victim"].AgentID

	killedAt := time.Now()
	procs[1].kill()
	var suspectAt, offlineAt time.Duration
	status := func() string {
		var v agentView
		if code, err := getJSON("https://"+orch.httpAddr+"/agents/"+victimID+"/capacity?stale", &v); err != nil || code != 200 {
			return fmt.Sprintf("error %d %v", code, err)
		}
		return v.Status
	}
	waitFor(t, 30*time.Second, "victim suspect", func() (bool, string) {
		s := status()
		return s == "suspect", s
	})
	suspectAt = time.Since(killedAt)
	waitFor(t, 100*time.Second, "victim offline", func() (bool, string) {
		s := status()
		if s != "suspect" && s != "offline" {
			t.Fatalf("victim went %q while silent", s)
		}
		return s == "offline", s
	})
	offlineAt = time.Since(killedAt)
	t.Logf("SIGKILLed desktop: suspect after %s, offline after %s (default 90 s suspicion timeout)",
		suspectAt.Round(10*time.Millisecond), offlineAt.Round(10*time.Millisecond))
	if suspectAt > 20*time.Second {
		t.Errorf("suspect after %s; want within seconds", suspectAt)
	}
	if offlineAt < 87*time.Second || offlineAt > 93*time.Second {
		t.Errorf("offline after %s; want 90 s ± 3 s", offlineAt)
	}
	if s, _ := agentsOn(orch.httpAddr); s["witness"].Status != "online" {
		t.Errorf("witness is %q", s["witness"].Status)
	}
}
