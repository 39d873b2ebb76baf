package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// raftPeer is one line of `chiffon operator raft list-peers -format json`.
type raftPeer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	State   string `json:"state"`
	Voter   bool   `json:"voter"`
}

// TestProcess_GossipNeverGrantsRaftMembership is issue 11's attack run
// with real binaries on a secured cluster (raft over mutual TLS, gossip
// encrypted): three orchestrators with server certificates and a desktop
// with a client certificate.
//
//   - Tag injection through the stock serf CLI (with the desktop's RPC
//     token): role=orchestrator, raft=<a free port>, rs=1. The leader
//     refuses it, and list-peers still shows exactly the 3 real voters
//     after several reconcile rounds.
//   - Rogue orchestrators holding the gossip key, one with a desktop's
//     client certificate and one with none, join gossip: neither becomes
//     a voter, and neither's API has anything of the registry (no leader;
//     the read it would forward is refused).
//   - Killing the leader still leaves a leader: the bogus candidates cost
//     no quorum.
func TestProcess_GossipNeverGrantsRaftMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	t.Parallel()
	bin, serf := chiffonBinary(t), serfBinary(t)
	out, errOut, err := runCmd(bin, "keygen")
	if err != nil {
		t.Fatalf("chiffon keygen: %v: %s", err, errOut)
	}
	key := strings.TrimSpace(out)
	p := pki(t)

	// Everything on 127.0.0.1: the test certificates name that IP.
	var orchs []*orchSpec
	procs := map[string]*proc{}
	for i := range 3 {
		join := ""
		if i > 0 {
			join = orchs[0].gossipAddr
		}
		name := fmt.Sprintf("trust%d", i+1)
		s := newOrchSpec(t, name, "127.0.0.1", 3, join)
		s.secure = nil // this test's own key and certificates below
		s.args = append(append(append(s.args, "-encrypt", key), p.serverArgs(t, name)...), fastTimings...)
		orchs = append(orchs, s)
		procs[name] = s.start(t)
	}
	desk := newNodeSpec(t, "trust-desk", "127.0.0.1").withMetrics(t, metricsJSON(t, 0.5, 8, 16, "nvidia", gpuJSON{Name: "RTX 4090", Total: 24, Free: 20}))
	desk.secure = nil
	desk.args = append(append([]string{"-encrypt", key, "-retry-join", orchs[0].gossipAddr, "-retry-interval", "200ms"},
		p.clientArgs(t, "trust-desk")...), fastTimings...)
	procs[desk.name] = desk.start(t)

	cliCert, cliKey := p.cert(t, tlsutil.RoleClient, "trust-cli")
	listPeers := func(o *orchSpec) ([]raftPeer, error) {
		out, errOut, err := runCmd(bin, "operator", "raft", "list-peers", "-http-addr", "https://"+o.httpAddr,
			"-tls-ca", p.CAFile, "-tls-cert", cliCert, "-tls-key", cliKey, "-format", "json")
		if err != nil {
			return nil, fmt.Errorf("%v: %s", err, errOut)
		}
		var peers []raftPeer
		if err := json.Unmarshal([]byte(out), &peers); err != nil {
			return nil, fmt.Errorf("%v: %s", err, out)
		}
		return peers, nil
	}
	realIDs := func() []string { // the agent ids of the live orchestrators, sorted
		var ids []string
		for _, o := range orchs {
			if !procs[o.name].exited() {
				ids = append(ids, readAgentID(t, o.dataDir))
			}
		}
		slices.Sort(ids)
		return ids
	}
	voters := func(peers []raftPeer) (ids []string, leader string) {
		for _, pr := range peers {
			if pr.Voter {
				ids = append(ids, pr.ID)
			}
			if pr.State == "leader" {
				leader = pr.ID
			}
		}
		slices.Sort(ids)
		return ids, leader
	}
	want := realIDs()
	waitFor(t, 40*time.Second, "the 3 orchestrators as voters with a leader", func() (bool, string) {
		peers, err := listPeers(orchs[0])
		ids, leader := voters(peers)
		return err == nil && slices.Equal(ids, want) && leader != "", fmt.Sprint(peers, err)
	})
	leaderProc := func() *proc { // the orchestrator list-peers names the leader
		peers, _ := listPeers(orchs[1])
		_, leader := voters(peers)
		for _, o := range orchs {
			if readAgentID(t, o.dataDir) == leader {
				return procs[o.name]
			}
		}
		return nil
	}
	waitFor(t, 30*time.Second, "the desktop in serf", func() (bool, string) {
		m, err := serfMembers(serf, desk)
		return err == nil && m["trust-desk"].Status == "alive" && len(m) == 4, fmt.Sprint(m, err)
	})

	// (a) Tag injection with the stock serf CLI and the desktop's token.
	// The desktop's heartbeat rewrites its own tags within 500 ms, so the
	// attacker (here, a goroutine the test stops below) keeps setting them.
	fakeRaft := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(t, "127.0.0.1")))
	if out, errOut, err := serfCmd(serf, desk, "tags", "-set", "role=orchestrator", "-set", "raft="+fakeRaft, "-set", "rs=1"); err != nil {
		t.Fatalf("serf tags -set: %v: %s%s", err, out, errOut)
	}
	stopInject, injectDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(injectDone)
		for {
			select {
			case <-stopInject:
				return
			case <-time.After(300 * time.Millisecond):
			}
			_, _, _ = serfCmd(serf, desk, "tags", "-set", "role=orchestrator", "-set", "raft="+fakeRaft, "-set", "rs=1")
		}
	}()
	var stopOnce sync.Once
	stopInjecting := func() { stopOnce.Do(func() { close(stopInject); <-injectDone }) }
	t.Cleanup(stopInjecting)

	// (b) Rogue orchestrators with the gossip key: a desktop's client
	// certificate, and no certificate at all.
	rogueCert := newOrchSpec(t, "rogue-cert", "127.0.0.1", 0, orchs[0].gossipAddr)
	rogueCert.secure = nil
	rogueCert.args = append(append(append(rogueCert.args, "-encrypt", key), p.clientArgs(t, "rogue-cert")...), fastTimings...)
	procs[rogueCert.name] = rogueCert.start(t)
	rogueBare := newOrchSpec(t, "rogue-bare", "127.0.0.1", 0, orchs[0].gossipAddr)
	rogueBare.secure = nil // an attacker passes -insecure to start without certificates
	rogueBare.args = append(append(rogueBare.args, "-encrypt", key, "-insecure"), fastTimings...)
	procs[rogueBare.name] = rogueBare.start(t)

	// The registry lists both rogues as orchestrators: the leader has
	// reconciled them as candidates.
	lp := leaderProc()
	if lp == nil {
		t.Fatal("no leader")
	}
	hc := p.httpClient(t, "trust-cli")
	waitFor(t, 40*time.Second, "the rogues in the registry as orchestrators", func() (bool, string) {
		resp, err := hc.Get("https://" + orchs[0].httpAddr + "/agents")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var list []struct {
			Name  string   `json:"name"`
			Roles []string `json:"roles"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			return false, err.Error()
		}
		n := 0
		for _, a := range list {
			if (a.Name == "rogue-cert" || a.Name == "rogue-bare") && slices.Contains(a.Roles, "orchestrator") {
				n++
			}
		}
		return n == 2, fmt.Sprint(list)
	})
	// Several reconcile rounds (1 s each, and every gossip event) later,
	// with the injected tags set again and again, still exactly the three
	// real voters.
	testwait.Holds(t, 6*time.Second, "exactly the 3 real voters", func() (bool, string) {
		peers, err := listPeers(orchs[2])
		ids, _ := voters(peers)
		return err == nil && slices.Equal(ids, want) && len(peers) == 3, fmt.Sprint(peers, err)
	})
	// The leader said why it refused each of the three.
	waitFor(t, 20*time.Second, "the leader logging its refusal of each impostor", func() (bool, string) {
		var missing []string
		for _, m := range []string{"trust-desk", "rogue-cert", "rogue-bare"} {
			if !strings.Contains(lp.logText(), "member="+m) || !strings.Contains(lp.logText(), "refusing raft voter") {
				missing = append(missing, m)
			}
		}
		return len(missing) == 0, fmt.Sprint("not logged: ", missing)
	})
	stopInjecting()

	// The rogues' APIs serve nothing of the registry.
	cc, ck := p.cert(t, tlsutil.RoleClient, "trust-cli")
	cert, err := tls.LoadX509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	// The rogue's own certificate is a client one, so no server name can
	// be verified: the test only wants to see what it serves.
	rogueClient := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true}}}
	for _, r := range []struct {
		spec *orchSpec
		base string
		hc   *http.Client
	}{{rogueCert, "https://" + rogueCert.httpAddr, rogueClient}, {rogueBare, "http://" + rogueBare.httpAddr, &http.Client{Timeout: 15 * time.Second}}} {
		for _, path := range []string{"/agents", "/agents?stale", "/v1/status/leader"} {
			resp, err := r.hc.Get(r.base + path)
			if err != nil {
				t.Fatalf("%s GET %s: %v", r.spec.name, path, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body := string(b)
			t.Logf("%s GET %s: %s %s", r.spec.name, path, resp.Status, strings.TrimSpace(body))
			if strings.Contains(body, "trust-desk") || strings.Contains(body, "trust1") {
				t.Errorf("%s's API served registry data at %s: %s", r.spec.name, path, body)
			}
			if path == "/agents" && resp.StatusCode == http.StatusOK {
				t.Errorf("%s's API answered a default read with 200: it must have no leader to forward to", r.spec.name)
			}
		}
	}

	// Killing the leader still leaves a leader among the two others.
	lp.kill()
	waitFor(t, 20*time.Second, "a new leader after killing the old one", func() (bool, string) {
		for _, o := range orchs {
			if procs[o.name].exited() {
				continue
			}
			peers, err := listPeers(o)
			ids, leader := voters(peers)
			if err != nil || leader == "" || !slices.Equal(ids, want) {
				return false, fmt.Sprint(o.name, peers, err)
			}
		}
		return true, ""
	})
}

// readAgentID reads a node's agent_id from its data dir, waiting for the
// node to write it (never writing one itself: that would race the node's
// own first write).
func readAgentID(t *testing.T, dataDir string) string {
	t.Helper()
	var id string
	waitFor(t, 30*time.Second, "the agent id in "+dataDir, func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(dataDir, consensus.NodeIDFile))
		id = strings.TrimSpace(string(b))
		return err == nil && id != "", fmt.Sprint(err)
	})
	return id
}

// TestProcess_FailoverTLSvsPlain measures what raft over mutual TLS costs
// a failover, with real binaries: two 3-orchestrator clusters on
// 127.0.0.1 in the same run, one plain and one with server certificates
// (raft and the HTTP API over mutual TLS). Each round SIGKILLs one
// cluster's leader, polls the survivors' /v1/status/leader every 10 ms
// until both name another leader, and restarts the killed one; the
// clusters take turns, so both see the same machine load. It runs only
// with CHIFFON_FAILOVER_ROUNDS set (docs/PERFORMANCE.md).
func TestProcess_FailoverTLSvsPlain(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("CHIFFON_FAILOVER_ROUNDS"))
	if rounds < 1 {
		t.Skip("a measurement: set CHIFFON_FAILOVER_ROUNDS=N to run N rounds per cluster")
	}
	p := pki(t)
	type cluster struct {
		name   string
		orchs  []*orchSpec
		procs  map[string]*proc
		scheme string
		hc     *http.Client
		took   []time.Duration
	}
	var clusters []*cluster
	for _, secure := range []bool{false, true} {
		c := &cluster{name: "plain", procs: map[string]*proc{}, scheme: "http", hc: &http.Client{Timeout: 10 * time.Second}}
		if secure {
			c.name, c.scheme, c.hc = "tls", "https", p.httpClient(t, "failover-cli")
		}
		for i := range 3 {
			join := ""
			if i > 0 {
				join = c.orchs[0].gossipAddr
			}
			s := newOrchSpec(t, fmt.Sprintf("fo-%s-%d", c.name, i+1), "127.0.0.1", 3, join)
			if !secure {
				s.secure = []string{"-insecure"}
			}
			c.orchs = append(c.orchs, s)
			c.procs[s.name] = s.start(t)
		}
		clusters = append(clusters, c)
	}
	leaderOn := func(c *cluster, o *orchSpec) string {
		resp, err := c.hc.Get(c.scheme + "://" + o.httpAddr + "/v1/status/leader")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var l leaderInfo
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&l) != nil {
			return ""
		}
		return l.HTTPAddr
	}
	agreed := func(c *cluster) string { // the leader every live orchestrator names, or ""
		var leader string
		for _, o := range c.orchs {
			if c.procs[o.name].exited() {
				continue
			}
			l := leaderOn(c, o)
			if l == "" || (leader != "" && l != leader) {
				return ""
			}
			leader = l
		}
		return leader
	}
	for _, c := range clusters {
		waitFor(t, 60*time.Second, c.name+" cluster leader", func() (bool, string) { return agreed(c) != "", "" })
	}
	for r := range rounds {
		for _, c := range clusters {
			old := agreed(c)
			var victim *orchSpec
			for _, o := range c.orchs {
				if o.httpAddr == old {
					victim = o
				}
			}
			if victim == nil {
				t.Fatalf("%s: no agreed leader before round %d", c.name, r)
			}
			c.procs[victim.name].kill()
			start := time.Now()
			// Polled every 10 ms, as failover.sh does.
			testwait.Every(t, 10*time.Millisecond, 30*time.Second, fmt.Sprintf("%s round %d: a new leader", c.name, r),
				func() (bool, string) {
					l := agreed(c)
					return l != "" && l != old, l
				})
			d := time.Since(start)
			c.took = append(c.took, d)
			t.Logf("round %d %s: killed %s, new leader after %v", r+1, c.name, victim.name, d.Round(time.Millisecond))
			<-c.procs[victim.name].done
			c.procs[victim.name] = victim.start(t)
			waitFor(t, 60*time.Second, victim.name+" back as a follower", func() (bool, string) {
				l := agreed(c)
				return l != "" && leaderOn(c, victim) == l, l
			})
		}
	}
	for _, c := range clusters {
		d := slices.Clone(c.took)
		slices.Sort(d)
		t.Logf("%s: %d kills, new leader after min %v, median %v, max %v", c.name, len(d),
			d[0].Round(time.Millisecond), d[len(d)/2].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
	}
}

// TestProcess_BootstrapIgnoresUnprovenFounders: -bootstrap-expect counts
// the orchestrators in the gossip pool, and the pool is open to anyone
// with the gossip key. A rogue orchestrator (no certificate) is the seed
// the three real ones join, with the agent id that sorts first, so that
// counting by tags would make it a founding voter. The real ones found
// the cluster among themselves.
func TestProcess_BootstrapIgnoresUnprovenFounders(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	t.Parallel()
	bin := chiffonBinary(t)
	out, errOut, err := runCmd(bin, "keygen")
	if err != nil {
		t.Fatalf("chiffon keygen: %v: %s", err, errOut)
	}
	key := strings.TrimSpace(out)
	p := pki(t)

	rogue := newOrchSpec(t, "boot-rogue", "127.0.0.1", 3, "")
	rogue.secure = nil // an attacker passes -insecure to start without certificates
	rogue.args = append(append(rogue.args, "-encrypt", key, "-insecure"), fastTimings...)
	const rogueID = "00000000-0000-4000-8000-000000000000"
	if err := os.WriteFile(filepath.Join(rogue.dataDir, consensus.NodeIDFile), []byte(rogueID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	procs := map[string]*proc{rogue.name: rogue.start(t)}
	var orchs []*orchSpec
	for i := range 3 {
		name := fmt.Sprintf("boot%d", i+1)
		s := newOrchSpec(t, name, "127.0.0.1", 3, rogue.gossipAddr)
		s.secure = nil // this test's own key and certificates
		s.args = append(append(append(s.args, "-encrypt", key), p.serverArgs(t, name)...), fastTimings...)
		orchs = append(orchs, s)
		procs[name] = s.start(t)
	}
	cliCert, cliKey := p.cert(t, tlsutil.RoleClient, "boot-cli")
	var want []string
	for _, o := range orchs {
		want = append(want, readAgentID(t, o.dataDir))
	}
	slices.Sort(want)
	waitFor(t, 60*time.Second, "the three real orchestrators as the only voters, with a leader", func() (bool, string) {
		out, errOut, err := runCmd(bin, "operator", "raft", "list-peers", "-http-addr", "https://"+orchs[0].httpAddr,
			"-tls-ca", p.CAFile, "-tls-cert", cliCert, "-tls-key", cliKey, "-format", "json")
		if err != nil {
			return false, errOut
		}
		var peers []raftPeer
		if err := json.Unmarshal([]byte(out), &peers); err != nil {
			return false, out
		}
		var ids []string
		leader := false
		for _, pr := range peers {
			ids = append(ids, pr.ID)
			leader = leader || pr.State == "leader"
		}
		slices.Sort(ids)
		return slices.Equal(ids, want) && leader, out
	})
	// A founder says why it left the rogue out (one that heard a leader
	// before its own turn never considered bootstrapping).
	logged := false
	for _, o := range orchs {
		log := procs[o.name].logText()
		logged = logged || strings.Contains(log, "not bootstrapping with a member") && strings.Contains(log, "member=boot-rogue")
	}
	if !logged {
		t.Errorf("no founder logged why it left the rogue out")
	}
}
