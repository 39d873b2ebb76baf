package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
)

// sleepAgent is the part of GET /agents the sleep test reads.
type sleepAgent struct {
	AgentID   string     `json:"agent_id"`
	Name      string     `json:"name"`
	Status    string     `json:"status"`
	SampledAt *time.Time `json:"sampled_at"`
	MAC       string     `json:"mac"`
	Metrics   struct {
		MaxFree float64 `json:"gpu_vram_max_free_gb"`
	} `json:"resource_metrics"`
}

// sleepWork is the part of GET /v1/work/{id} the sleep test reads.
type sleepWork struct {
	Status  string `json:"status"`
	AgentID string `json:"agent_id"`
	Events  []struct {
		Event   string `json:"event"`
		AgentID string `json:"agent_id"`
	} `json:"events"`
}

// wolListener counts the datagrams that reach a UDP address on loopback:
// the leader's -wol-broadcast.
type wolListener struct {
	pc      net.PacketConn
	mu      sync.Mutex
	packets [][]byte // guarded by mu
	done    chan struct{}
}

func listenWOL(t *testing.T, ip string) *wolListener {
	t.Helper()
	pc, err := net.ListenPacket("udp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	l := &wolListener{pc: pc, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			l.mu.Lock()
			l.packets = append(l.packets, bytes.Clone(buf[:n]))
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-l.done
	})
	return l
}

func (l *wolListener) received() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]byte(nil), l.packets...)
}

// TestProcess_SleepIsNotFailure_WakeOnLAN is issue 13's "sleep and wake
// on demand" with real processes: three orchestrators (suspicion timeout
// 3 s, much shorter than the sleep), a small desktop and a big one with a
// MAC address (loopback has none: -mac-address).
//
//   - `chiffon power suspend` on the big desktop: asleep on every
//     orchestrator within 2 s; the process is then stopped (SIGSTOP, the
//     suspended machine), serf declares it failed, and it stays asleep —
//     never suspect nor offline — for longer than the suspicion timeout;
//   - work that needs 16 GB of VRAM, which only the asleep desktop has:
//     exactly one magic packet (6×0xFF, 16× its MAC) reaches the UDP
//     listener given as -wol-broadcast, and the item's events say so;
//   - SIGCONT and `chiffon power resume`: online on every orchestrator
//     within 5 s with a sample taken after the resume (and the metrics
//     file's new figure); the work then runs there, and no second packet
//     was sent.
func TestProcess_SleepIsNotFailure_WakeOnLAN(t *testing.T) {
	if testing.Short() {
		t.Skip("process test with a real broker")
	}
	broker := dispatchtest.StartForTest(t)
	bin := chiffonBinary(t)
	const ip, mac = "127.0.31", "0a:1b:2c:3d:4e:5f"
	wol := listenWOL(t, ip+".9")
	queue := "chiffon.work.sleep"
	orchs, _ := startOrchs(t, "sl-orch", ip, "-suspicion-timeout", "3s", "-amqp-url", broker.URL, "-amqp-work-queue", queue,
		"-wol-broadcast", wol.pc.LocalAddr().String(), "-wol-timeout", "1m", "-work-pending-timeout", "2m")
	handler := `cat`
	desk := func(name, host string, free float64) *nodeSpec {
		s := newNodeSpec(t, name, host).withMetrics(t,
			metricsJSON(t, 0, 8, 32, "nvidia", gpuJSON{Name: "RTX 4090", Total: 24, Free: free}))
		s.args = append([]string{"-retry-join", orchs[0].gossipAddr, "-retry-interval", "200ms", "-work-handler", handler,
			"-work-addr", fmt.Sprintf("%s:%d", host, freeTCPPort(t, host))}, fastTimings...)
		return s
	}
	small := desk("sl-small", ip+".4", 4)
	big := desk("sl-big", ip+".5", 20)
	big.args = append(big.args, "-mac-address", mac)
	small.start(t)
	bigProc := big.start(t)

	agentsEverywhere := func() (map[string]map[string]sleepAgent, string) {
		all := map[string]map[string]sleepAgent{}
		var seen []string
		for _, o := range orchs {
			var list []sleepAgent
			if _, err := getJSON("https://"+o.httpAddr+"/agents?stale", &list); err != nil {
				return nil, o.name + ": " + err.Error()
			}
			all[o.name] = map[string]sleepAgent{}
			for _, a := range list {
				all[o.name][a.Name] = a
				seen = append(seen, fmt.Sprintf("%s:%s=%s", o.name, a.Name, a.Status))
			}
		}
		return all, strings.Join(seen, " ")
	}
	everywhere := func(name, status string) func() (bool, string) {
		return func() (bool, string) {
			all, seen := agentsEverywhere()
			if all == nil {
				return false, seen
			}
			for _, o := range orchs {
				if all[o.name][name].Status != status {
					return false, seen
				}
			}
			return true, seen
		}
	}
	waitFor(t, 90*time.Second, "both desktops online on every orchestrator", func() (bool, string) {
		ok, seen := everywhere("sl-small", "online")()
		ok2, _ := everywhere("sl-big", "online")()
		return ok && ok2, seen
	})
	all, _ := agentsEverywhere()
	bigID := all[orchs[0].name]["sl-big"].AgentID
	if got := all[orchs[0].name]["sl-big"].MAC; got != mac {
		t.Fatalf("sl-big's mac in the registry = %q, want %q", got, mac)
	}

	power := func(cmd string) {
		t.Helper()
		out, errOut, err := runCmd(bin, "power", cmd, "-rpc-addr", big.rpcAddr, "-data-dir", big.dataDir)
		if err != nil {
			t.Fatalf("chiffon power %s: %v\n%s%s", cmd, err, out, errOut)
		}
		t.Logf("chiffon power %s: %s", cmd, strings.TrimSpace(out))
	}

	// Suspend: asleep everywhere within 2 s.
	power("suspend")
	took := waitFor(t, 2*time.Second, "sl-big asleep on every orchestrator", everywhere("sl-big", "asleep"))
	t.Logf("asleep on every orchestrator %v after chiffon power suspend returned", took.Round(time.Millisecond))
	bigProc.signal(t, syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			bigProc.signal(t, syscall.SIGCONT) // let cleanup stop it
		}
	}()
	// Serf notices the silence; the registry keeps saying asleep, past the
	// 3 s suspicion timeout.
	serf := serfBinary(t)
	waitStatus(t, serf, orchs[0].nodeSpec, "sl-big", "failed", 30*time.Second)
	testwait.Holds(t, 5*time.Second, "sl-big asleep on every orchestrator after serf declared it failed", func() (bool, string) {
		all, seen := agentsEverywhere()
		if all == nil {
			return true, seen // an orchestrator did not answer this time; not a wrong answer
		}
		for _, o := range orchs {
			if all[o.name]["sl-big"].Status != "asleep" {
				return false, seen
			}
		}
		return true, seen
	})

	// Work that only the asleep desktop can take wakes it: one packet.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prod := &noLossProducer{url: broker.URL, queue: queue}
	defer prod.close()
	req := `{"work_id":"sl-1","payload":{"n":1},"requirements":{"gpu_type":"nvidia","min_gpu_vram_gb":16}}`
	if err := prod.publish(ctx, []noLossRequest{{workID: "sl-1", body: []byte(req)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a magic packet at -wol-broadcast", func() (bool, string) {
		n := len(wol.received())
		return n > 0, fmt.Sprintf("%d packets", n)
	})
	hw, _ := net.ParseMAC(mac)
	want := append(bytes.Repeat([]byte{0xff}, 6), bytes.Repeat(hw, 16)...)
	if got := wol.received()[0]; !bytes.Equal(got, want) {
		t.Fatalf("packet = % x, want % x", got, want)
	}
	workURL := "https://" + orchs[0].httpAddr + "/v1/work/sl-1"
	var w sleepWork
	waitFor(t, 10*time.Second, "sl-1 pending with a wake event for sl-big", func() (bool, string) {
		_, err := getJSON(workURL, &w)
		return err == nil && w.Status == "pending" && len(w.Events) == 1 && w.Events[0].Event == "wake" &&
			w.Events[0].AgentID == bigID, fmt.Sprintf("%+v %v", w, err)
	})

	// Resume, with a new figure in the metrics file: online everywhere
	// within 5 s, with a sample taken after the resume.
	writeFileAtomic(t, big.metricsFile, metricsJSON(t, 0, 8, 32, "nvidia", gpuJSON{Name: "RTX 4090", Total: 24, Free: 22}))
	resumed := time.Now()
	bigProc.signal(t, syscall.SIGCONT)
	stopped = false
	power("resume")
	took = waitFor(t, 5*time.Second, "sl-big online with a fresh sample on every orchestrator", func() (bool, string) {
		all, seen := agentsEverywhere()
		if all == nil {
			return false, seen
		}
		for _, o := range orchs {
			a := all[o.name]["sl-big"]
			if a.Status != "online" || a.SampledAt == nil || a.SampledAt.Before(resumed.Add(-time.Second)) || a.Metrics.MaxFree != 22 {
				return false, fmt.Sprintf("%s: %+v", o.name, a)
			}
		}
		return true, seen
	})
	t.Logf("online with fresh metrics on every orchestrator %v after chiffon power resume returned", took.Round(time.Millisecond))

	waitFor(t, 30*time.Second, "sl-1 run on sl-big", func() (bool, string) {
		_, err := getJSON(workURL, &w)
		return err == nil && w.Status == "succeeded" && w.AgentID == bigID, fmt.Sprintf("%+v %v", w, err)
	})
	if n := len(wol.received()); n != 1 {
		t.Fatalf("%d magic packets, want exactly one", n)
	}
}
