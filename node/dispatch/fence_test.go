package dispatch_test

import (
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node/dispatch"
	"github.com/chiffon-dev/chiffon/node/worker"
)

// cutProxy stands between the leader and one desktop's work endpoint: it
// relays until cut, and while cut accepts connections and takes bytes but
// delivers nothing either way — a network that drops the orchestrators'
// packets to the desktop, which refuses nothing and answers nothing.
type cutProxy struct {
	ln      net.Listener
	backend string
	cut     atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{} // open connections, both sides; guarded by mu
	closed  bool                  // guarded by mu
}

func newCutProxy(t testing.TB, backend string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, backend: backend, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *cutProxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			in.Close()
			return
		}
		p.wg.Go(func() {
			out, err := net.Dial("tcp", p.backend)
			if err != nil || !p.track(out) {
				if out != nil {
					out.Close()
				}
				_, _ = io.Copy(io.Discard, in)
				return
			}
			p.wg.Go(func() { p.pipe(out, in) })
			p.pipe(in, out)
		})
	}
}

// pipe copies src to dst, dropping what src sends while the proxy is cut.
func (p *cutProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok && !p.cut.Load() {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// extraDesktop starts another desktop's runner behind real HTTP; its
// handler appends "work_id attempt" to the returned marker file before
// running script.
func extraDesktop(t *testing.T, script string) (*worker.Runner, string, string) {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "ran")
	rc := worker.DefaultConfig()
	rc.Handler = `echo "$CHIFFON_WORK_ID $CHIFFON_WORK_ATTEMPT" >> ` + marker + `; ` + script
	rc.Token = "tok"
	rc.Logger = testlog.New(t, slog.LevelInfo)
	r, err := worker.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(func() { srv.Close(); _ = r.Close() })
	return r, strings.TrimPrefix(srv.URL, "http://"), marker
}

func readMarker(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// TestDispatch_UnreachableDesktopWorkPlacedElsewhere cuts a desktop off
// from the leader only (gossip, here the registry, keeps it online): after
// UnreachableAfter of failed calls the leader marks it unreachable, fences
// its attempt and places the item on the other desktop; when the cut
// heals, the leader's probe clears the mark and work goes there again.
func TestDispatch_UnreachableDesktopWorkPlacedElsewhere(t *testing.T) {
	const unreachableAfter = 1500 * time.Millisecond
	h, fb := fakeHarness(t, `cat`, func(c *dispatch.Config) {
		c.UnreachableAfter, c.Lease = unreachableAfter, 200*time.Millisecond
	})
	_, backend, marker := extraDesktop(t, `cat`)
	proxy := newCutProxy(t, backend)
	proxy.cut.Store(true)
	// "a-cut" sorts before "desk-1": equal CPU-only work goes to it first.
	h.addDesktop("a-cut", proxy.addr(), consensus.StatusOnline)
	cutAt := time.Now()
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "w1", consensus.Requirements{}, `1`)})
	h.waitWork("w1", 10*time.Second, func(w consensus.WorkItem) bool { return w.AgentID == "a-cut" })
	w := h.waitWork("w1", 30*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.AgentID != "desk-1" || w.Attempts != 2 {
		t.Fatalf("work %+v; want it succeeded on desk-1, attempt 2", w)
	}
	if took := time.Since(cutAt); took < unreachableAfter {
		t.Fatalf("placed again %s after the cut, before the %s bound", took, unreachableAfter)
	}
	n, _ := h.store.FSM().Get("a-cut")
	if n.Reachable() || n.Status != consensus.StatusOnline {
		t.Fatalf("a-cut is %s, unreachable since %v; want online and unreachable", n.Status, n.UnreachableSince)
	}
	if got := readMarker(marker); got != "" {
		t.Fatalf("the cut desktop ran %q", got)
	}

	proxy.cut.Store(false)
	testwait.Until(t, 10*time.Second, "a-cut reachable again", func() (bool, string) {
		n, _ := h.store.FSM().Get("a-cut")
		return n.Reachable(), n.UnreachableSince.String()
	})
	// Placement takes it again: equal nodes, smallest agent ID.
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "w2", consensus.Requirements{}, `2`)})
	w = h.waitWork("w2", 20*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.AgentID != "a-cut" {
		t.Fatalf("work %+v; want it succeeded on a-cut", w)
	}
	if got := readMarker(marker); got != "w2 1" {
		t.Fatalf("the healed desktop ran %q, want w2 attempt 1 only", got)
	}
}

// TestDispatch_SupersededResultIgnored fences a running attempt (its node
// is reported offline while the leader can still reach it): the result it
// then reports is ignored, the desktop is told to drop it, and the item's
// result is the next attempt's.
func TestDispatch_SupersededResultIgnored(t *testing.T) {
	release := filepath.Join(t.TempDir(), "go")
	h, fb := fakeHarness(t, `cat`, nil)
	desk1, _ := h.store.FSM().Get("desk-1")
	h.addDesktop("desk-1", desk1.WorkAddr, consensus.StatusOffline) // no other place to go, for now
	slow, addr, marker := extraDesktop(t, `while [ ! -f `+release+` ]; do sleep 0.02; done; echo zombie`)
	h.addDesktop("a-slow", addr, consensus.StatusOnline)
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "w", consensus.Requirements{}, `"fresh"`)})
	h.waitWork("w", 10*time.Second, func(w consensus.WorkItem) bool { return w.Status == consensus.WorkRunning })
	h.addDesktop("a-slow", addr, consensus.StatusOffline)
	h.waitWork("w", 10*time.Second, func(w consensus.WorkItem) bool { return w.Status == consensus.WorkPending })
	// Attempt 1 is fenced; now it finishes and its tracker reports it.
	if err := writeFile(release); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, "a-slow told to drop attempt 1", func() (bool, string) {
		st, held := slow.Get("w", 0)
		return !held, st.Status
	})
	if w, _ := h.store.FSM().GetWork("w"); w.Status != consensus.WorkPending || w.Attempts != 1 || w.Output != "" {
		t.Fatalf("the fenced attempt's result was recorded: %+v", w)
	}
	h.addDesktop("desk-1", desk1.WorkAddr, consensus.StatusOnline)
	w := h.waitWork("w", 20*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.AgentID != "desk-1" || w.Attempts != 2 || w.Output != `"fresh"` {
		t.Fatalf("work %+v; want attempt 2's result from desk-1", w)
	}
	if got := readMarker(marker); got != "w 1" {
		t.Fatalf("a-slow ran %q, want attempt 1 once", got)
	}
	msgs := fb.WaitMessages("chiffon.results", 1, 5*time.Second)
	if len(msgs) != 1 || strings.Contains(string(msgs[0].Body), "zombie") {
		t.Fatalf("results %q; want one, attempt 2's", msgs)
	}
}
