package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/serf/client"
	"github.com/hashicorp/serf/serf"

	"github.com/chiffon-dev/chiffon/gossip/simnet"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/probe"
)

// testLogger sends logs to t.Log.
func testLogger(t *testing.T) *slog.Logger { return testlog.New(t, slog.LevelDebug) }

// fastConfig is a gossip config on loopback port 0 with scaled SWIM timings:
// a silent node is failed within a second or two instead of tens.
func fastConfig(t *testing.T, name string) Config {
	c := DefaultConfig()
	c.NodeName = name
	c.DataDir = t.TempDir()
	c.BindAddr = "127.0.0.1:0"
	c.RPCAddr = "127.0.0.1:0"
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.SuspicionMult = 2
	c.LeavePropagateDelay = 100 * time.Millisecond
	c.RetryInterval = 50 * time.Millisecond
	c.Logger = testLogger(t)
	c.Tags = map[string]string{TagVersion: "1", TagAgentID: name + "-id", TagRole: RoleDesktop}
	return c
}

func start(t *testing.T, c Config) *Gossip {
	t.Helper()
	g, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatalf("start %s: %v", c.NodeName, err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, timeout, what, testwait.Bool(cond))
}

func memberStatus(g *Gossip, name string) string {
	for _, m := range g.Serf().Members() {
		if m.Name == name {
			return m.Status.String()
		}
	}
	return ""
}

func TestGossip_JoinTagsFailureAndLeave(t *testing.T) {
	seed := start(t, fastConfig(t, "seed"))
	var nodes []*Gossip
	for i := range 3 {
		c := fastConfig(t, fmt.Sprintf("d%d", i))
		c.Join = []string{seed.Addr()}
		nodes = append(nodes, start(t, c))
	}
	waitFor(t, 5*time.Second, "4 alive members on the seed", func() bool {
		return seed.Serf().NumNodes() == 4 && memberStatus(seed, "d2") == "alive"
	})

	// A heartbeat's tags reach another node.
	info := NodeInfo{AgentID: "d0-id", Roles: []string{RoleDesktop}, Sample: probe.Sample{
		CPUCoresPhysical: 8, CPUCoresAvailable: 7, GPUType: probe.GPUTypeNVIDIA, GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: 20,
		GPUs: []probe.GPU{{Index: 0, Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: 5}}}}
	if changed, err := nodes[0].UpdateInfo(info); err != nil || !changed {
		t.Fatalf("UpdateInfo = %v, %v", changed, err)
	}
	if changed, err := nodes[0].UpdateInfo(info); err != nil || changed {
		t.Fatalf("unchanged sample re-broadcast: %v, %v", changed, err)
	}
	waitFor(t, 5*time.Second, "d0's vram tag on d2", func() bool {
		for _, m := range nodes[2].Serf().Members() {
			if m.Name == "d0" {
				got, err := DecodeTags(m.Tags)
				return err == nil && got.MaxFreeVRAMGB == 20 && got.Sample.GPUType == "nvidia"
			}
		}
		return false
	})

	// Killed without a leave: SWIM declares it failed.
	nodes[1].Close()
	waitFor(t, 10*time.Second, "d1 failed on the seed", func() bool { return memberStatus(seed, "d1") == "failed" })

	// Graceful leave: left, quickly.
	begin := time.Now()
	if err := nodes[2].Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "d2 left on the seed", func() bool { return memberStatus(seed, "d2") == "left" })
	t.Logf("leave seen as left after %s", time.Since(begin))
}

func TestGossip_OperatorTagsSurviveHeartbeats(t *testing.T) {
	c := fastConfig(t, "solo")
	g := start(t, c)
	key, err := ReadRPCAuthKey(c.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := client.ClientFromConfig(&client.Config{Addr: g.RPCAddr(), AuthKey: key, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// What `serf tags -set rack=b2` sends.
	if err := rc.UpdateTags(map[string]string{"rack": "b2"}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		info := NodeInfo{AgentID: "solo-id", Roles: []string{RoleDesktop},
			Sample: probe.Sample{CPUCoresPhysical: 4, CPUCoresAvailable: float64(i + 1), GPUType: "none"}}
		if _, err := g.UpdateInfo(info); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := rc.Members()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Tags["rack"] != "b2" || ms[0].Tags[TagCPU] != "0/0/0/4/3" {
		t.Fatalf("tags after heartbeats = %v", ms[0].Tags)
	}
	// Tags persist in the data dir for the next start.
	b, err := os.ReadFile(filepath.Join(g.cfg.DataDir, "serf", "tags.json"))
	if err != nil || !strings.Contains(string(b), `"rack": "b2"`) {
		t.Fatalf("tags file = %s, %v", b, err)
	}
}

func TestGossip_RestartKeepsOperatorTagsButRefreshesOwn(t *testing.T) {
	c := fastConfig(t, "r")
	c.Tags[TagAPIAddr] = "127.0.0.1:1111"
	g := start(t, c)
	if _, err := g.UpdateInfo(NodeInfo{AgentID: "r-id", Roles: []string{RoleDesktop}, APIAddr: "127.0.0.1:1111"}); err != nil {
		t.Fatal(err)
	}
	tags := g.Tags()
	tags["owner"] = "ml"
	if err := g.agent.SetTags(tags); err != nil {
		t.Fatal(err)
	}
	g.Close()

	c.Tags = map[string]string{TagVersion: "1", TagAgentID: "r-id", TagRole: RoleDesktop} // no API any more
	g2 := start(t, c)
	got := g2.Tags()
	if got["owner"] != "ml" {
		t.Fatalf("operator tag lost across restart: %v", got)
	}
	if _, ok := got[TagAPIAddr]; ok {
		t.Fatalf("stale own tag restored: %v", got)
	}
}

func TestGossip_EncryptionMismatchCannotJoin(t *testing.T) {
	k1, k2 := "T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s=", "cg8StVXbQJ0gPvMd9o7yrg8ZbsjmVDp4bC/aVHiSlHk="
	sc := fastConfig(t, "seed")
	sc.EncryptKey = k1
	seed := start(t, sc)
	if !seed.Serf().EncryptionEnabled() {
		t.Fatal("encryption not enabled")
	}

	bad := fastConfig(t, "bad")
	bad.EncryptKey = k2
	bad.Join = []string{seed.Addr()}
	g, err := New(bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); !errors.Is(err, ErrNoJoin) {
		g.Close()
		t.Fatalf("join with the wrong key: err = %v, want ErrNoJoin", err)
	}

	none := fastConfig(t, "plain")
	none.Join = []string{seed.Addr()}
	g, _ = New(none)
	if err := g.Start(context.Background()); !errors.Is(err, ErrNoJoin) {
		g.Close()
		t.Fatalf("join without a key: err = %v, want ErrNoJoin", err)
	}

	good := fastConfig(t, "good")
	good.EncryptKey = k1
	good.Join = []string{seed.Addr()}
	gg := start(t, good)
	waitFor(t, 5*time.Second, "good on the seed", func() bool { return memberStatus(seed, "good") == "alive" })
	if memberStatus(seed, "bad") != "" || memberStatus(seed, "plain") != "" {
		t.Fatalf("a node without the key got in: %v", seed.Serf().Members())
	}

	// The keyring persists: a restart without -encrypt is still encrypted.
	gg.Close()
	good.EncryptKey = ""
	again := start(t, good)
	if !again.Serf().EncryptionEnabled() {
		t.Fatal("restart without -encrypt lost the keyring")
	}
}

func TestGossip_RetryJoin(t *testing.T) {
	// The seed's address is reserved first, and the seed starts later.
	sc := fastConfig(t, "late-seed")
	probeG := start(t, fastConfig(t, "placeholder"))
	addr := probeG.Addr()
	probeG.Close()
	sc.BindAddr = addr

	c := fastConfig(t, "joiner")
	c.RetryJoin = []string{addr}
	j := start(t, c)
	seed := start(t, sc)
	waitFor(t, 5*time.Second, "joiner on the late seed", func() bool { return memberStatus(seed, "joiner") == "alive" })
	_ = j

	// With a bounded retry, giving up is reported on Err.
	c2 := fastConfig(t, "giveup")
	c2.RetryJoin = []string{"127.0.0.1:1"}
	c2.RetryMax = 2
	g := start(t, c2)
	select {
	case err := <-g.Err():
		if !errors.Is(err, ErrNoJoin) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("retry-join never gave up")
	}
}

// TestGossip_StartContext checks that ctx bounds Start and nothing after it:
// a done ctx stops Start before it starts serf or between two -join
// addresses, while retry-join outlives the ctx that Start was given.
func TestGossip_StartContext(t *testing.T) {
	seed := start(t, fastConfig(t, "seed"))

	t.Run("done before Start", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		c := fastConfig(t, "late")
		c.Join = []string{seed.Addr()}
		g, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		if err := g.Start(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Start with a cancelled ctx: err = %v, want context.Canceled", err)
		}
		if st := memberStatus(seed, "late"); st != "" {
			t.Fatalf("the seed sees %q as %s; it should never have joined", "late", st)
		}
	})

	t.Run("done between join addresses", func(t *testing.T) {
		// The first -join address cancels ctx as it is contacted, and
		// hangs up: Start must give up before it tries the seed.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { // ends when ln is closed
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				cancel()
				conn.Close()
			}
		}()
		c := fastConfig(t, "interrupted")
		c.Join = []string{ln.Addr().String(), seed.Addr()}
		g, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		if err := g.Start(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Start: err = %v, want context.Canceled", err)
		}
		if st := memberStatus(seed, "interrupted"); st != "" {
			t.Fatalf("the seed sees %q as %s; Start should have stopped before joining it", "interrupted", st)
		}
	})

	t.Run("retry-join outlives ctx", func(t *testing.T) {
		sc := fastConfig(t, "late-seed")
		placeholder := start(t, fastConfig(t, "placeholder"))
		addr := placeholder.Addr()
		placeholder.Close()
		sc.BindAddr = addr

		ctx, cancel := context.WithCancel(context.Background())
		c := fastConfig(t, "patient")
		c.RetryJoin = []string{addr}
		g, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		if err := g.Start(ctx); err != nil {
			t.Fatal(err)
		}
		cancel() // the start is over; retry-join keeps going until Close
		late := start(t, sc)
		waitFor(t, 5*time.Second, "retry-join after its start ctx ended", func() bool { return memberStatus(late, "patient") == "alive" })
	})
}

func TestGossip_EventHandlerSeesMembers(t *testing.T) {
	rec := &recorder{}
	c := fastConfig(t, "watcher")
	c.Handler = rec
	w := start(t, c)
	o := fastConfig(t, "other")
	o.Join = []string{w.Addr()}
	start(t, o)
	waitFor(t, 5*time.Second, "member-join event for other", func() bool { return rec.saw("member-join", "other") })
}

type recorder struct {
	mu  sync.Mutex
	evs []string
}

func (r *recorder) HandleEvent(e serf.Event) {
	if me, ok := e.(serf.MemberEvent); ok {
		r.mu.Lock()
		for _, m := range me.Members {
			r.evs = append(r.evs, me.Type.String()+"/"+m.Name)
		}
		r.mu.Unlock()
	}
}

func (r *recorder) saw(typ, name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.evs {
		if e == typ+"/"+name {
			return true
		}
	}
	return false
}

func TestNew_RejectsBadConfig(t *testing.T) {
	cases := map[string]func(*Config){
		"bind without port": func(c *Config) { c.BindAddr = "127.0.0.1" },
		"bad advertise":     func(c *Config) { c.AdvertiseAddr = "x" },
		"short key":         func(c *Config) { c.EncryptKey = "c2hvcnQ=" },
		"not base64":        func(c *Config) { c.EncryptKey = "!!!" },
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			c := fastConfig(t, "x")
			mut(&c)
			if _, err := New(c); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestGossip_CrashedNodeRejoinsFromSavedPeers(t *testing.T) {
	a := start(t, fastConfig(t, "a"))
	bc := fastConfig(t, "b")
	bc.Join = []string{a.Addr()}
	b := start(t, bc)
	peers := filepath.Join(bc.DataDir, "serf", peersFile)
	waitFor(t, 5*time.Second, "b's peers file", func() bool {
		data, err := os.ReadFile(peers)
		return err == nil && strings.Contains(string(data), a.Addr())
	})
	// A crash: no leave, and serf's snapshot may not have flushed.
	b.Close()
	waitFor(t, 10*time.Second, "b failed on a", func() bool { return memberStatus(a, "b") == "failed" })
	bc.Join = nil
	bc.BindAddr = b.Addr()
	start(t, bc)
	waitFor(t, 10*time.Second, "b alive again on a", func() bool { return memberStatus(a, "b") == "alive" })
}

// TestGossip_CrashedNodeRejoinsAfterHearingGossipFirst is the race that
// made TestProcess_NoLossUnderFailures time out: a node killed with -9
// soon after its cluster formed restarts with a serf snapshot holding
// only itself (serf buffers the snapshot and flushes it on a later event
// only), and before it decides how to rejoin, gossip from members that
// still count it dead (memberlist gossips to the dead for 30 s) has
// already taught it some of them. It knows members, but no member knows
// it is back: deciding "the snapshot worked" from the member count left
// the saved peers untried, and the others saw it alive only when serf's
// reconnect or a push-pull found it (30 s intervals by default).
func TestGossip_CrashedNodeRejoinsAfterHearingGossipFirst(t *testing.T) {
	a := start(t, fastConfig(t, "a"))
	bc := fastConfig(t, "b")
	bc.Join = []string{a.Addr()}
	b := start(t, bc)
	waitFor(t, 5*time.Second, "b's peers file", func() bool {
		data, err := os.ReadFile(filepath.Join(bc.DataDir, "serf", peersFile))
		return err == nil && strings.Contains(string(data), a.Addr())
	})
	b.Close()
	waitFor(t, 10*time.Second, "b failed on a", func() bool { return memberStatus(a, "b") == "failed" })
	// b comes back after a has stopped gossiping b's death (memberlist
	// sends it 4 times here, once per 20 ms round): in the failing run the
	// restart came 350 ms after the failure. Heard in time, the dead
	// message alone makes b refute it, which is not the case under test.
	<-time.After(time.Second)
	// What kill -9 leaves of serf's snapshot when nothing followed the
	// joins: the node's own line.
	snap := filepath.Join(bc.DataDir, "serf", "local.snapshot")
	if err := os.WriteFile(snap, []byte("alive: b "+b.Addr()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// a keeps changing its tags, so that it has broadcasts to gossip, to
	// the dead b among others.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			tags := a.Tags()
			tags["seq"] = fmt.Sprint(i)
			_ = a.Serf().SetTags(tags)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	// The restarted b decides how to rejoin only once a's gossip has
	// reached it: the order of the failing run, made certain.
	heard := false
	testHookBeforeRejoin = func(g *Gossip) {
		if g.cfg.NodeName != "b" {
			return
		}
		deadline := time.After(10 * time.Second)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for g.agent.Serf().NumNodes() < 2 {
			select {
			case <-deadline:
				return
			case <-tick.C:
			}
		}
		heard = true
	}
	t.Cleanup(func() { testHookBeforeRejoin = nil })

	bc.Join = nil
	bc.BindAddr = b.Addr()
	start(t, bc)
	if !heard {
		t.Fatal("the restarted b never heard a's gossip before deciding how to rejoin")
	}
	// Well within serf's reconnect and memberlist's push-pull intervals
	// (30 s each here), the paths that found b before the fix.
	waitFor(t, 5*time.Second, "b alive again on a", func() bool { return memberStatus(a, "b") == "alive" })
}

// TestGossip_RestartContactsAFewSavedPeers: a node restarted without
// -join joins the peers its last run saw alive, but a few of them, not
// all: each join is a full state exchange, and the saved list holds the
// whole fleet (a thousand push-pulls at every restart of a desktop in a
// fleet of a thousand).
func TestGossip_RestartContactsAFewSavedPeers(t *testing.T) {
	seed := start(t, fastConfig(t, "seed"))
	for _, name := range []string{"c", "d", "e", "f"} {
		c := fastConfig(t, name)
		c.Join = []string{seed.Addr()}
		start(t, c)
	}
	bc := fastConfig(t, "b")
	bc.Join = []string{seed.Addr()}
	b := start(t, bc)
	waitFor(t, 10*time.Second, "5 peers in b's peers file", func() bool {
		data, err := os.ReadFile(filepath.Join(bc.DataDir, "serf", peersFile))
		return err == nil && strings.Count(string(data), ":") == 5
	})
	b.Close()
	waitFor(t, 10*time.Second, "b failed on the seed", func() bool { return memberStatus(seed, "b") == "failed" })

	logs := &testlog.Buffer{}
	bc.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	bc.Join = nil
	bc.BindAddr = b.Addr()
	start(t, bc)
	contacted := regexp.MustCompile(`msg="retry-join succeeded".* contacted=(\d+)`)
	var m []string
	waitFor(t, 10*time.Second, "the restarted b's retry-join", func() bool {
		m = contacted.FindStringSubmatch(logs.String())
		return m != nil
	})
	if n, _ := strconv.Atoi(m[1]); n < 1 || n > rejoinMembers {
		t.Errorf("the restarted b contacted %d of its 5 saved peers; want 1 to %d\n%s", n, rejoinMembers, logs)
	}
	waitFor(t, 10*time.Second, "b alive again on the seed", func() bool { return memberStatus(seed, "b") == "alive" })
}

// failedAt records when each member-failed event arrives.
type failedAt struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (f *failedAt) HandleEvent(e serf.Event) {
	if me, ok := e.(serf.MemberEvent); ok && me.Type == serf.EventMemberFailed {
		now := time.Now()
		f.mu.Lock()
		for _, m := range me.Members {
			f.at[m.Name] = now
		}
		f.mu.Unlock()
	}
}

func (f *failedAt) get(name string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.at[name]
	return t, ok
}

// TestGossip_FailureLagEstimate kills a node of a small cluster several
// times and compares when serf reports it failed with FailureLag, the
// estimate the leader anchors its 90 s offline clock on (SuspicionMult 4
// as by default, probe interval scaled to 100 ms). SWIM's only random part
// is the wait for the first probe after the node fell silent: 0 to ~3
// probe intervals at this size, about one on average. So each error must
// lie within [-1, +2] intervals and the mean near zero. Scheduling on a
// loaded test machine (the race detector, the suite's other packages)
// delays the failure event by tens of milliseconds, half an interval at
// this scale, so the bounds allow slack on a trial, [-2, +4], and take
// the mean within [-1, +1.5]. A formula that
// dropped the suspicion term or the log10 N scale is off by 4 intervals
// on every trial.
func TestGossip_FailureLagEstimate(t *testing.T) {
	events := &failedAt{at: map[string]time.Time{}}
	cfg := func(name string) Config {
		c := fastConfig(t, name)
		c.SuspicionMult = 4
		return c
	}
	c := cfg("seed")
	c.Handler = events
	seed := start(t, c)
	other := cfg("other")
	other.Join = []string{seed.Addr()}
	start(t, other)
	interval := c.ProbeInterval
	const trials = 8
	var sum time.Duration
	var errs []string
	for i := range trials {
		name := fmt.Sprintf("victim%d", i)
		vc := cfg(name)
		vc.Join = []string{seed.Addr()}
		victim := start(t, vc)
		waitFor(t, 5*time.Second, name+" alive on the seed", func() bool { return memberStatus(seed, name) == "alive" })
		lag := seed.FailureLag()
		silent := time.Now()
		victim.Close() // no leave: it just falls silent
		waitFor(t, 10*time.Second, name+" failed on the seed", func() bool { _, ok := events.get(name); return ok })
		at, _ := events.get(name)
		e := at.Sub(silent) - lag
		sum += e
		errs = append(errs, e.Round(time.Millisecond).String())
		if e < -2*interval || e > 4*interval {
			t.Errorf("%s: failed %s after it fell silent, FailureLag %s: off by %s, beyond SWIM's probe granularity",
				name, at.Sub(silent).Round(time.Millisecond), lag, e.Round(time.Millisecond))
		}
	}
	mean := sum / trials
	t.Logf("probe interval %s, FailureLag %s: errors %v, mean %s", interval, seed.FailureLag(), errs, mean.Round(time.Millisecond))
	if mean < -interval || mean > 3*interval/2 {
		t.Errorf("mean error %s: FailureLag is off centre by more than a probe interval", mean.Round(time.Millisecond))
	}
}

// TestGossip_Transport runs two nodes over a simulated network: with
// Config.Transport set they join at the transport's addresses, not
// BindAddr's, TuneSerf's settings are the ones serf runs with, and a crash
// on that network (the transport shut down) makes the other call the node
// failed.
func TestGossip_Transport(t *testing.T) {
	nw, err := simnet.New(simnet.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nw.Close() })
	var gs []*Gossip
	var trs []*simnet.Transport
	for i := range 2 {
		name := fmt.Sprintf("sim%d", i)
		tr, err := nw.NewTransport(name)
		if err != nil {
			t.Fatal(err)
		}
		c := fastConfig(t, name)
		c.DataDir, c.RPCAddr = "", ""
		c.BindAddr = "127.0.0.1:1" // would fail to bind if it were used
		c.Transport = tr
		c.TuneSerf = func(sc *serf.Config) {
			sc.ReconnectInterval = 7 * time.Second
			sc.MemberlistConfig.EnableCompression = false
		}
		trs = append(trs, tr)
		if i > 0 {
			c.Join = []string{gs[0].Addr()}
		}
		gs = append(gs, start(t, c))
		if got, want := gs[i].Addr(), tr.Addr(); got != want {
			t.Fatalf("%s gossips at %s, want the transport's %s", name, got, want)
		}
		if sc := gs[i].agent.SerfConfig(); sc.ReconnectInterval != 7*time.Second || sc.MemberlistConfig.EnableCompression {
			t.Fatalf("%s: serf runs with reconnect interval %s, compression %v; TuneSerf set 7s and false",
				name, sc.ReconnectInterval, sc.MemberlistConfig.EnableCompression)
		}
	}
	waitFor(t, 10*time.Second, "both alive in each other's view", func() bool {
		return memberStatus(gs[0], "sim1") == "alive" && memberStatus(gs[1], "sim0") == "alive"
	})
	_ = trs[1].Shutdown()
	waitFor(t, 10*time.Second, "sim1 failed in sim0's view", func() bool { return memberStatus(gs[0], "sim1") == "failed" })
}

// A Leave that timed out goes on inside serf; Close used to shut serf
// down under it, and memberlist then panicked ("leave after shutdown"),
// killing the process (seen in a 300-desktop sim whose churned desktops
// left while the fleet's broadcast queues were full). Close now waits for
// it: nothing of the leave is left running when Close returns.
func TestGossip_CloseWaitsForATimedOutLeave(t *testing.T) {
	seed := start(t, fastConfig(t, "seed"))
	c := fastConfig(t, "d0")
	c.Join = []string{seed.Addr()}
	c.LeavePropagateDelay = time.Second // keeps serf's leave running after Leave gave up
	d0 := start(t, c)
	waitFor(t, 5*time.Second, "d0 alive on the seed", func() bool { return memberStatus(seed, "d0") == "alive" })

	if err := d0.Leave(time.Nanosecond); err == nil {
		t.Fatal("Leave(1ns) returned nil; want a timeout while serf still leaves")
	}
	waitFor(t, 5*time.Second, "d0's serf leaving", func() bool { return d0.Serf().State() == serf.SerfLeaving })
	if err := d0.Close(); err != nil {
		t.Fatal(err)
	}
	var stacks strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&stacks, 2)
	if strings.Contains(stacks.String(), "gossip.(*Gossip).Leave.func") {
		t.Fatalf("serf's leave still runs after Close returned (memberlist panics when it reaches its Leave):\n%s", stacks.String())
	}
	if err := d0.Leave(time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("Leave after Close = %v; want ErrClosed", err)
	}
	waitFor(t, 5*time.Second, "d0 left on the seed", func() bool { return memberStatus(seed, "d0") == "left" })
}

// A tag update whose broadcast has not finished its retransmissions within
// serf's BroadcastTimeout (a large fleet's full broadcast queues) is set
// and queued, not failed: UpdateInfo reports it changed, and the other
// node gets the tags. Before, the node logged "updating tags failed" at
// every heartbeat of a 300-desktop fleet while its tags went out.
func TestGossip_UpdateInfoQueuedBroadcastIsNotAFailure(t *testing.T) {
	seed := start(t, fastConfig(t, "seed"))
	c := fastConfig(t, "d0")
	c.Join = []string{seed.Addr()}
	c.TuneSerf = func(sc *serf.Config) { sc.BroadcastTimeout = time.Nanosecond } // no broadcast finishes in time
	d0 := start(t, c)
	waitFor(t, 5*time.Second, "d0 alive on the seed", func() bool { return memberStatus(seed, "d0") == "alive" })

	info := NodeInfo{AgentID: "d0-id", Roles: []string{RoleDesktop}, Sample: probe.Sample{CPUCoresPhysical: 8, CPUCoresAvailable: 3}}
	if changed, err := d0.UpdateInfo(info); err != nil || !changed {
		t.Fatalf("UpdateInfo = %v, %v; want true, nil (the update is queued)", changed, err)
	}
	waitFor(t, 5*time.Second, "d0's cpu tag on the seed", func() bool {
		for _, m := range seed.Serf().Members() {
			if m.Name == "d0" {
				got, err := DecodeTags(m.Tags)
				return err == nil && got.Sample.CPUCoresAvailable == 3
			}
		}
		return false
	})
}

// -gossip-nodes and -retransmit-mult reach memberlist; 0 keeps its LAN
// defaults (3 peers a round, each broadcast 4 × log10(N+1) times).
func TestGossip_GossipBudgetSettings(t *testing.T) {
	for _, tc := range []struct{ nodes, mult, wantNodes, wantMult int }{
		{0, 0, 3, 4},
		{6, 2, 6, 2},
	} {
		c := fastConfig(t, fmt.Sprintf("budget-%d-%d", tc.nodes, tc.mult))
		c.GossipNodes, c.RetransmitMult = tc.nodes, tc.mult
		g := start(t, c)
		ml := g.agent.SerfConfig().MemberlistConfig
		if ml.GossipNodes != tc.wantNodes || ml.RetransmitMult != tc.wantMult {
			t.Errorf("GossipNodes %d, RetransmitMult %d: memberlist runs with %d and %d, want %d and %d",
				tc.nodes, tc.mult, ml.GossipNodes, ml.RetransmitMult, tc.wantNodes, tc.wantMult)
		}
	}
}
