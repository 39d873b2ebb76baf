package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/consensus/consensustest"
	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// makeFollowerCluster starts two bootstrapped nodes, then adds a third as
// a voter (so it is a follower, whichever of the two leads) and an api
// Server on each. opts.Config may give the third node (index 2) its own
// data dir or log store. It returns the cluster and the third node.
func makeFollowerCluster(t *testing.T, opts consensustest.Options) (*apiCluster, int) {
	t.Helper()
	var owners sync.WaitGroup
	t.Cleanup(owners.Wait)
	c := consensustest.MakeCluster(t, 2, opts)
	f := c.AddNode()
	testwait.Until(t, 20*time.Second, "the third node added as a voter", testwait.Err(func() error {
		for _, l := range []int{0, 1} {
			if c.Store(l).IsLeader() {
				return c.Store(l).AddVoter(c.ID(f), c.Addr(f))
			}
		}
		return errors.New("no leader yet")
	}))
	ac := &apiCluster{t: t, c: c, srv: map[int]*Server{}, addrs: map[string]string{}}
	for i := range 3 {
		store := c.Store(i)
		cfg := testConfig(t, store.FSM(), store, ac.resolve)
		cfg.LeaderEstablished = followLeadership(store, &owners)
		s := startServer(t, cfg)
		ac.mu.Lock()
		ac.srv[i], ac.addrs[c.ID(i)] = s, s.Addr()
		ac.mu.Unlock()
	}
	ac.upsert(rec(1, consensus.StatusOnline, 1, 1, 1, ""))
	return ac, f
}

// writeBurst applies n entries through the leader (each a few records, so
// that they take room on disk) without waiting for every node, and returns
// the last index.
func writeBurst(t *testing.T, ac *apiCluster, n int) uint64 {
	t.Helper()
	var last uint64
	for i := range n {
		var recs []consensus.Record
		for j := range 4 {
			r := rec(100+4*i+j, consensus.StatusOnline, 8, 16, 64, "NVIDIA GeForce RTX 4090 with a long name to take room")
			recs = append(recs, r)
		}
		testwait.Until(t, 20*time.Second, "a burst entry applied", testwait.Err(func() error {
			l := ac.c.WaitForLeader(t, 10*time.Second)
			idx, err := ac.c.Store(l).Apply(consensus.UpsertNodes{At: time.Now(), Nodes: recs}, 5*time.Second)
			last = idx
			return err
		}))
	}
	return last
}

// staleHeaders reads ?stale on base and returns its consistency headers.
func staleHeaders(t *testing.T, base string) (knownLeader string, lastContactMS, lag int64) {
	t.Helper()
	r := do(t, nil, "GET", base+"/v1/agents?stale", nil)
	if r.code != 200 {
		t.Fatalf("stale read: %d %s", r.code, r.body)
	}
	num := func(h string) int64 {
		v, err := strconv.ParseInt(r.header.Get(h), 10, 64)
		if err != nil {
			t.Fatalf("header %s = %q: %v", h, r.header.Get(h), err)
		}
		return v
	}
	return r.header.Get(apitype.HeaderKnownLeader), num(apitype.HeaderLastContact), num(apitype.HeaderIndexLag)
}

// readyz returns GET /readyz's status and reason.
func readyz(t *testing.T, base string) (int, string) {
	t.Helper()
	r := do(t, nil, "GET", base+"/readyz", nil)
	var out apitype.Ready
	r.decode(t, &out)
	return r.code, out.Reason
}

// checkCannotPersist waits for the follower at base, whose appends fail
// since about failedAt, to say so: /readyz 503 with the reason, stale
// answers that do not claim a leader, a last contact at least as old as
// the failure, the index lag and the metrics.
func checkCannotPersist(t *testing.T, base string, failedAt time.Time, minLag int64) {
	t.Helper()
	testwait.Until(t, 15*time.Second, "/readyz 503: cannot persist", func() (bool, string) {
		code, reason := readyz(t, base)
		return code == 503 && strings.Contains(reason, "cannot persist the raft log"), fmt.Sprintf("%d %q", code, reason)
	})
	// The follower stopped keeping up at failedAt or later: once a second
	// has passed, its answers must be at least that old.
	testwait.Until(t, 15*time.Second, "honest stale headers", func() (bool, string) {
		known, lc, lag := staleHeaders(t, base)
		ok := known == "false" && lag >= minLag && lc >= 1000 && time.Since(failedAt) >= 1500*time.Millisecond
		return ok, fmt.Sprintf("known-leader %s, last-contact %d ms, index-lag %d (want false, >= 1000, >= %d)", known, lc, lag, minLag)
	})
	m := scrape(t, base)
	if v, ok := m["chiffon_raft_can_persist"]; !ok || v != 0 {
		t.Errorf("chiffon_raft_can_persist = %v (present %v), want 0", v, ok)
	}
	atLeast(t, m, "chiffon_raft_index_lag", float64(minLag))
	atLeast(t, m, "chiffon_raft_last_contact_seconds", 1)
}

// checkRecovered waits for the follower at base to be ready again, caught
// up with index, with truthful headers. The leader retries the rejected
// entries with a backoff that doubles up to 10.24 s (raft's), so recovery
// takes up to about that long after a long failure.
func checkRecovered(t *testing.T, base string, index uint64, within time.Duration) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("recovered in %s", time.Since(start).Round(time.Millisecond)) }()
	testwait.Until(t, within, "/readyz 200 again", func() (bool, string) {
		code, reason := readyz(t, base)
		return code == 200, fmt.Sprintf("%d %q", code, reason)
	})
	testwait.Until(t, within, "caught up, headers current", func() (bool, string) {
		r := do(t, nil, "GET", base+"/v1/agents?stale", nil)
		idx, _ := strconv.ParseUint(r.header.Get(apitype.HeaderIndex), 10, 64)
		known, lc, lag := staleHeaders(t, base)
		return idx >= index && known == "true" && lag == 0 && lc >= 0 && lc < 1000,
			fmt.Sprintf("index %d of %d, known-leader %s, last-contact %d ms, index-lag %d", idx, index, known, lc, lag)
	})
	m := scrape(t, base)
	if v := m["chiffon_raft_can_persist"]; v != 1 {
		t.Errorf("chiffon_raft_can_persist = %v after recovery, want 1", v)
	}
}

// failingLog is a raft.LogStore whose appends fail with ENOSPC while fail
// is set, as BoltDB's do on a full disk.
type failingLog struct {
	raft.LogStore
	fail *atomic.Bool
}

func (l *failingLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }
func (l *failingLog) StoreLogs(logs []*raft.Log) error {
	if l.fail.Load() {
		return fmt.Errorf("write raft.db: %w", syscall.ENOSPC)
	}
	return l.LogStore.StoreLogs(logs)
}

// countingHandler counts log records by message, passing them on.
type countingHandler struct {
	slog.Handler
	mu     *sync.Mutex
	counts map[string]int // guarded by mu
}

// Enabled lets INFO and up through to be counted; Handle passes on only
// what the wrapped handler wants.
func (h countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.counts[r.Message]++
	h.mu.Unlock()
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}
func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h.Handler = h.Handler.WithAttrs(as)
	return h
}
func (h countingHandler) WithGroup(name string) slog.Handler {
	h.Handler = h.Handler.WithGroup(name)
	return h
}
func (h countingHandler) count(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for msg, c := range h.counts {
		if strings.HasPrefix(msg, prefix) {
			n += c
		}
	}
	return n
}

// TestAPI_FollowerThatCannotPersist: a follower whose log appends fail
// (ENOSPC from a fake log store) must not report ready or current. Before,
// raft's heartbeats kept its last contact fresh: /readyz said 200 and
// stale answers claimed a leader and a contact a few ms old while it fell
// ever further behind. It logs the episode once, not once per retry, and
// recovers at once when appends succeed again.
func TestAPI_FollowerThatCannotPersist(t *testing.T) {
	var fail atomic.Bool
	logs := countingHandler{Handler: consensustest.TestLogger(t, slog.LevelWarn).Handler(), mu: new(sync.Mutex), counts: map[string]int{}}
	ac, f := makeFollowerCluster(t, consensustest.Options{
		Logger: slog.New(logs),
		Config: func(i int, cfg *consensus.Config) {
			if i == 2 {
				cfg.WrapLogStore = func(ls raft.LogStore) raft.LogStore { return &failingLog{LogStore: ls, fail: &fail} }
			}
		},
	})
	base := ac.url(f)
	if code, reason := readyz(t, base); code != 200 {
		t.Fatalf("healthy follower: /readyz %d %q", code, reason)
	}

	failedAt := time.Now()
	fail.Store(true)
	const burst = 100
	last := writeBurst(t, ac, burst)
	checkCannotPersist(t, base, failedAt, burst)
	if n := logs.count("cannot persist the raft log"); n != 1 {
		t.Errorf("%d 'cannot persist' log lines for one episode of failing appends, want 1", n)
	}
	if n := logs.count("failed to append to logs"); n != 0 {
		t.Errorf("raft's per-retry 'failed to append to logs' logged %d times at WARN or above, want 0", n)
	}

	fail.Store(false)
	checkRecovered(t, base, last, 20*time.Second)
	if n := logs.count("raft log appends succeed again"); n != 1 {
		t.Errorf("%d recovery log lines, want 1", n)
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a fresh directory and
// unmounts it at cleanup (after the cluster, registered later, closed).
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("this test needs to mount a small tmpfs (run it as root, or where mount is permitted): mount -t tmpfs on %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

// fillDisk writes path until the file system is full and checks that it
// ended with ENOSPC.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, size := range []int{64 << 10, 4 << 10, 512} {
		buf := make([]byte, size)
		for {
			if _, err = f.Write(buf); err != nil {
				break
			}
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling %s ended with %v, want ENOSPC", path, err)
	}
}

// TestAPI_FollowerDiskFull is the same on a real disk: the follower keeps
// its raft-boltdb log on a small tmpfs that the test fills, and frees.
func TestAPI_FollowerDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, 4<<20)
	ac, f := makeFollowerCluster(t, consensustest.Options{
		OnDisk: true,
		Logger: consensustest.TestLogger(t, slog.LevelWarn),
		Config: func(i int, cfg *consensus.Config) {
			if i == 2 {
				cfg.DataDir = filepath.Join(mnt, "data")
			}
		},
	})
	base := ac.url(f)
	if code, reason := readyz(t, base); code != 200 {
		t.Fatalf("healthy follower: /readyz %d %q", code, reason)
	}

	fill := filepath.Join(mnt, "fill")
	failedAt := time.Now()
	fillDisk(t, fill)
	// BoltDB reuses pages it has freed, so the first few entries may still
	// fit; a few hundred kB of them cannot.
	const burst = 300
	last := writeBurst(t, ac, burst)
	checkCannotPersist(t, base, failedAt, 64)

	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	checkRecovered(t, base, last, 20*time.Second)
}
