package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// testLogger sends logs at Info and up to t.Log until the test's cleanups
// have run. (consensustest.TestLogger does the same; this package's own
// tests cannot import it.)
func testLogger(t testing.TB) *slog.Logger {
	w := &tlogWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tlogWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool // guarded by mu
}

func (w *tlogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// waitFor polls cond until it is true or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, timeout, what, testwait.Bool(cond))
}

// fastConfig is a single-node config with short timings: consensustest's
// (which this package's own tests cannot import), long enough for a busy
// machine.
func fastConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.NodeID = "node-1"
	cfg.InMemory = true
	cfg.BindAddr = "127.0.0.1:0"
	cfg.HeartbeatTimeout = 300 * time.Millisecond
	cfg.ElectionTimeout = 300 * time.Millisecond
	cfg.LeaderLeaseTimeout = 200 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.Logger = testLogger(t)
	return cfg
}

// openLeader opens a single-node store from cfg, bootstraps it if new and
// waits for it to lead.
func openLeader(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Bootstrap(nil); err != nil && !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "leadership", s.IsLeader)
	return s
}

func upsert(ids ...string) UpsertNodes {
	c := UpsertNodes{At: t0}
	for _, id := range ids {
		c.Nodes = append(c.Nodes, testRecord(id, StatusOnline))
	}
	return c
}

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*Config)
		wantOK bool
	}{
		{"valid", func(*Config) {}, true},
		{"valid in memory without dir", func(c *Config) { c.DataDir = ""; c.InMemory = true }, true},
		{"valid with transport", func(c *Config) { _, c.Transport = raft.NewInmemTransport(""); c.BindAddr = "" }, true},
		{"no node id", func(c *Config) { c.NodeID = "" }, false},
		{"no data dir", func(c *Config) { c.DataDir = "" }, false},
		{"bad bind", func(c *Config) { c.BindAddr = "nonsense" }, false},
		{"wildcard without advertise", func(c *Config) { c.BindAddr = "0.0.0.0:8300" }, false},
		{"wildcard with advertise", func(c *Config) { c.BindAddr = "0.0.0.0:8300"; c.AdvertiseAddr = "10.0.0.1:8300" }, true},
		{"bad advertise", func(c *Config) { c.AdvertiseAddr = "10.0.0.1" }, false},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = time.Second }, false},
		{"election below heartbeat", func(c *Config) { c.ElectionTimeout = 100 * time.Millisecond }, false},
		{"tiny heartbeat", func(c *Config) { c.HeartbeatTimeout = time.Millisecond }, false},
		{"no snapshots retained", func(c *Config) { c.SnapshotRetain = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NodeID = "n"
			cfg.DataDir = t.TempDir()
			cfg.BindAddr = "127.0.0.1:8300"
			tt.edit(&cfg)
			_, err := New(cfg)
			if tt.wantOK && err != nil {
				t.Fatalf("New: %v", err)
			}
			if !tt.wantOK && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New err = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestStore_Lifecycle(t *testing.T) {
	// New must not bind: take a free port, release it, build a Store on it,
	// and check the port is still free.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := fastConfig(t)
	cfg.BindAddr = addr
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("New bound its port: %v", err)
	}
	l.Close()

	if _, err := s.Apply(upsert("a"), time.Second); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("Apply before Open = %v, want ErrNotOpen", err)
	}
	if err := s.Bootstrap(nil); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("Bootstrap before Open = %v, want ErrNotOpen", err)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("second Open = %v, want ErrAlreadyOpen", err)
	}
	if s.Addr() != addr {
		t.Fatalf("Addr() = %q, want %q", s.Addr(), addr)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Open(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Apply(upsert("a"), time.Second); !errors.Is(err, ErrClosed) || !errors.Is(err, raft.ErrRaftShutdown) {
		t.Fatalf("Apply after Close = %v, want ErrClosed", err)
	}
	if _, ok := <-s.LeaderCh(); ok {
		t.Fatal("LeaderCh not closed by Close")
	}

	// Close without Open is fine too.
	s2, err := New(fastConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStore_SingleNode(t *testing.T) {
	s := openLeader(t, fastConfig(t))
	select {
	case v := <-s.LeaderCh():
		if !v {
			t.Fatal("LeaderCh delivered false on a lone leader")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("LeaderCh delivered nothing")
	}
	if err := s.Bootstrap(nil); !errors.Is(err, ErrAlreadyBootstrapped) || !errors.Is(err, raft.ErrCantBootstrap) {
		t.Fatalf("second Bootstrap = %v, want ErrAlreadyBootstrapped", err)
	}

	idx, err := s.Apply(upsert("a", "b"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.FSM().Index(); got != idx {
		t.Fatalf("FSM index %d, Apply returned %d", got, idx)
	}
	if r, ok := s.FSM().Get("a"); !ok || r.ModifyIndex != idx {
		t.Fatalf("Get(a) = %+v, %v", r, ok)
	}
	if _, err := s.ApplyEncoded([]byte{7, '{', '}'}, time.Second); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("ApplyEncoded(garbage) = %v, want ErrBadCommand", err)
	}
	if _, err := s.Apply(UpsertNodes{At: t0}, time.Second); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("Apply(empty) = %v, want ErrBadCommand", err)
	}
	b, _ := EncodeCommand(DeleteNodes{At: t0, AgentIDs: []string{"b"}})
	if _, err := s.ApplyEncoded(b, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Barrier(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyLeader(); err != nil {
		t.Fatal(err)
	}

	servers, err := s.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 || !servers[0].Leader || !servers[0].Voter || servers[0].ID != "node-1" || servers[0].Address != s.Addr() {
		t.Fatalf("Servers() = %+v", servers)
	}
	if id, addr := s.Leader(); id != "node-1" || addr != s.Addr() {
		t.Fatalf("Leader() = %q, %q", id, addr)
	}
	st := s.Stats()
	if st["state"] != "Leader" || st["registry_nodes"] != "1" {
		t.Fatalf("Stats() = %v", st)
	}
	if s.AppliedIndex() < s.FSM().Index() {
		t.Fatalf("AppliedIndex %d < registry index %d", s.AppliedIndex(), s.FSM().Index())
	}
}

func TestStore_BackupRestore(t *testing.T) {
	s := openLeader(t, fastConfig(t))

	// A backup of an empty, fresh store falls back to the FSM itself.
	var empty bytes.Buffer
	if err := s.SaveSnapshot(&empty); err != nil {
		t.Fatalf("SaveSnapshot on an empty store: %v", err)
	}

	if _, err := s.Apply(upsert("a", "b"), time.Second); err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if err := s.SaveSnapshot(&backup); err != nil {
		t.Fatal(err)
	}
	want := s.FSM().List()
	// Nothing new since that snapshot: the second backup must still work.
	var again bytes.Buffer
	if err := s.SaveSnapshot(&again); err != nil {
		t.Fatalf("second SaveSnapshot: %v", err)
	}

	if _, err := s.Apply(DeleteNodes{At: t0, AgentIDs: []string{"a"}}, time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(upsert("c"), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.RestoreSnapshot(bytes.NewReader(backup.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := s.FSM().List(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after restore:\n got %+v\nwant %+v", got, want)
	}
	// The cluster still takes writes after a restore.
	if _, err := s.Apply(upsert("d"), time.Second); err != nil {
		t.Fatal(err)
	}
	if s.FSM().Len() != 3 {
		t.Fatalf("Len() = %d, want 3", s.FSM().Len())
	}

	if err := s.RestoreSnapshot(strings.NewReader("not a snapshot")); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("RestoreSnapshot(garbage) = %v, want ErrBadSnapshot", err)
	}
	if s.FSM().Len() != 3 {
		t.Fatal("bad restore changed the registry")
	}
}

// TestStore_TCPBoltReopen runs one node on a real TCP transport with BoltDB
// on disk, closes it, and opens it again from the same directory.
func TestStore_TCPBoltReopen(t *testing.T) {
	dir := t.TempDir()
	id, err := LoadOrCreateNodeID(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig(t)
	cfg.NodeID, cfg.DataDir, cfg.InMemory = id, dir, false

	s := openLeader(t, cfg)
	addr := s.Addr()
	t.Logf("first run listens on %s", addr)
	if _, err := s.Apply(upsert("a", "b"), time.Second); err != nil {
		t.Fatal(err)
	}
	// Snapshot, then write more: the reopened node needs both the snapshot
	// and the log after it.
	if err := s.SaveSnapshot(&bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	last, err := s.Apply(upsert("c"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := s.FSM().List()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "raft", "raft.db"), filepath.Join(dir, "snapshots")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("expected %s: %v", p, err)
		}
	}

	// Same ID, same directory, same address (a real deployment has a fixed
	// port).
	id2, err := LoadOrCreateNodeID(dir)
	if err != nil || id2 != id {
		t.Fatalf("node id %q, %v; want %q", id2, err, id)
	}
	cfg.BindAddr = addr
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	if err := s2.Bootstrap(nil); !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Fatalf("Bootstrap on reopen = %v, want ErrAlreadyBootstrapped", err)
	}
	waitFor(t, 5*time.Second, "leadership after reopen", s2.IsLeader)
	waitFor(t, 5*time.Second, "registry replay", func() bool { return s2.FSM().Index() >= last })
	if got := s2.FSM().List(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("registry after reopen:\n got %+v\nwant %+v", got, want)
	}
	if _, err := s2.Apply(upsert("d"), time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOrCreateNodeID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	id, err := LoadOrCreateNodeID(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, NodeIDFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("node-id mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := LoadOrCreateNodeID(dir)
	if err != nil || again != id {
		t.Fatalf("second call = %q, %v; want %q", again, err, id)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("data dir holds %d entries, want just node-id", len(entries))
	}

	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, NodeIDFile), []byte("not-a-uuid\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateNodeID(bad); !errors.Is(err, ErrBadNodeID) {
		t.Fatalf("bad file: err = %v, want ErrBadNodeID", err)
	}
	if _, err := LoadOrCreateNodeID(""); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("empty dir: err = %v, want ErrInvalidConfig", err)
	}
}

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), "raft")
	l.Named("snapshot").With("peer", "p1").Warn("failed to contact", "error", errors.New("boom"))
	l.Debug("hidden")
	out := buf.String()
	for _, want := range []string{"level=WARN", `msg="failed to contact"`, "logger=raft.snapshot", "peer=p1", "error=boom"} {
		if !strings.Contains(out, want) {
			t.Errorf("log line lacks %s: %s", want, out)
		}
	}
	if strings.Contains(out, "hidden") || l.IsDebug() || !l.IsInfo() {
		t.Errorf("debug leaked through an Info logger: %s", out)
	}
}

func BenchmarkStoreApply(b *testing.B) {
	cfg := fastConfig(b)
	cfg.Logger = nil
	s := openLeader(b, cfg)
	cmd := upsert("3f1c2a9e-0000-4000-8000-000000000001")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Apply(cmd, time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// TestStore_WaitCommitAppliedWaitsForTheFSM holds a committed entry before
// the leader's FSM applies it: raft's commit and applied indexes pass it
// (AppliedIndex counts entries handed to the FSM), the registry does not,
// and WaitCommitApplied waits until the registry has applied it. Entries
// that never reach the FSM (a barrier) do not make it wait.
func TestStore_WaitCommitAppliedWaitsForTheFSM(t *testing.T) {
	cfg := fastConfig(t)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var (
		holdMu sync.Mutex
		holdAt uint64 // guarded by holdMu; 0: hold nothing
	)
	release := make(chan struct{})
	s.fsm.beforeApply = func(index uint64) {
		holdMu.Lock()
		hold := holdAt != 0 && index >= holdAt
		holdMu.Unlock()
		if hold {
			<-release
		}
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
		_ = s.Close()
	})
	if err := s.Bootstrap(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "leadership", s.IsLeader)
	if _, err := s.Apply(upsert("a"), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Barrier(time.Second); err != nil {
		t.Fatal(err)
	}
	// Only a barrier after the last command: nothing to wait for.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	commit, err := s.WaitCommitApplied(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if commit <= s.FSM().Index() {
		t.Fatalf("commit index %d, registry index %d: want the barrier after the last command", commit, s.FSM().Index())
	}

	holdMu.Lock()
	holdAt = commit + 1
	holdMu.Unlock()
	applied := make(chan error, 1)
	go func() {
		_, err := s.Apply(upsert("b"), 5*time.Second)
		applied <- err
	}()
	r, err := s.running()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "raft to commit and hand over the held entry", func() bool {
		return r.CommitIndex() > commit && r.AppliedIndex() > commit
	})
	if got := s.FSM().Index(); got > commit {
		t.Fatalf("registry index %d: the held entry was applied", got)
	}

	type result struct {
		commit uint64
		err    error
	}
	waited := make(chan result, 1)
	go func() {
		c, err := s.WaitCommitApplied(ctx)
		waited <- result{c, err}
	}()
	testwait.Holds(t, 200*time.Millisecond, "WaitCommitApplied waiting for the held entry", func() (bool, string) {
		select {
		case res := <-waited:
			return false, fmt.Sprintf("returned %d, %v with the registry at %d", res.commit, res.err, s.FSM().Index())
		default:
			return true, ""
		}
	})

	// A short context ends the wait with its error.
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer scancel()
	if _, err := s.WaitCommitApplied(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitCommitApplied(short ctx) = %v, want DeadlineExceeded", err)
	}

	close(release)
	released = true
	res := <-waited
	if res.err != nil {
		t.Fatal(res.err)
	}
	if got := s.FSM().Index(); got < res.commit || res.commit <= commit {
		t.Fatalf("WaitCommitApplied = %d with the registry at %d (held entry after %d)", res.commit, got, commit)
	}
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
}
