//go:build unix

package ui_test

import (
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/node"
	"github.com/chiffon-dev/chiffon/node/nodetest"
	"github.com/chiffon-dev/chiffon/probe"
)

// row is what the page shows of one node.
type row struct {
	Name, Status string
	GPUBars      int
}

const rowsScript = `return Array.from(document.querySelectorAll('#node-rows tr')).map(tr => ({
  Name: tr.dataset.name, Status: tr.dataset.status, GPUBars: tr.querySelectorAll('td.gpus .gauge').length}))`

func statuses(rows []row) map[string]string {
	out := map[string]string{}
	for _, r := range rows {
		out[r.Name] = r.Status
	}
	return out
}

// TestDashboard_LiveInChromium loads /ui/ from an orchestrator in headless
// Chromium, enters the API token in the page, and checks that the page
// lists every node, follows a killed desktop to suspect without a reload,
// shows a desktop that went to sleep asleep, and says so when the orchestrator itself goes away.
func TestDashboard_LiveInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster and browser test")
	}
	const token = "dashboard-test-token"
	b := startBrowser(t) // first: fail fast when Chromium is missing

	// The offline clock is long, so that a killed desktop stays suspect
	// while the page is watched.
	cores := map[string]int{"desk-a": 8, "desk-b": 16}
	sampled := time.Now().Add(-5 * time.Second) // the desktops' fixed sample time
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: []string{"orch-0"}, Desktops: []string{"desk-a", "desk-b"},
		Logger: testlog.New(t, slog.LevelWarn), Node: func(name string, c *node.Config) error {
			c.API.Token = token
			c.Orchestrator.Liveness.SuspicionTimeout = 30 * time.Second
			if n := cores[name]; n > 0 {
				c.Sampler = nodetest.NewSampler(probe.Sample{CPULoad1: 1.5, CPULoad5: 1, CPULoad15: 0.5, CPUCoresPhysical: n,
					CPUCoresAvailable: float64(n) - 1.5, MemoryPercent: 25, MemoryAvailableGB: 48, TakenAt: sampled,
					GPUType: probe.GPUTypeNVIDIA, GPUVRAMTotalGB: 48, GPUVRAMAvailableGB: 30, GPUs: []probe.GPU{
						{Index: 0, Name: "RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: 10},
						{Index: 1, Name: "NVIDIA RTX 6000 Ada Generation", VRAMTotalGB: 24, VRAMFreeGB: 10, UtilizationPct: 60}}})
			}
			return nil
		}})
	orch := tc.Node("orch-0")

	url := "http://" + orch.APIAddr() + "/ui/"
	begin := time.Now()
	b.open(url)

	// The page loads without the token, then asks for it.
	waitPage(b, 10*time.Second, "the token request", `return document.getElementById('banner').innerText`,
		func(s string) bool { return strings.Contains(s, "needs an API token") })
	b.typeInto("#token-input", token)
	b.click("#token-form button[type=submit]")

	// Every node, by name, online, with a bar per GPU.
	rows := waitPage(b, 20*time.Second, "every node online", rowsScript, func(rs []row) bool {
		st := statuses(rs)
		return st["orch-0"] == "online" && st["desk-a"] == "online" && st["desk-b"] == "online"
	})
	for _, r := range rows {
		if want := map[string]int{"desk-a": 2, "desk-b": 2}[r.Name]; r.GPUBars != want {
			t.Errorf("%s shows %d GPU bars, want %d", r.Name, r.GPUBars, want)
		}
	}
	t.Logf("page listed every node %s after loading", time.Since(begin).Round(time.Millisecond))
	// Each desktop says how old its figures are; the orchestrator, which
	// does not sample, says nothing.
	waitPage(b, 10*time.Second, "the desktops' sample ages", `return Array.from(document.querySelectorAll('#node-rows tr')).map(
	  tr => tr.dataset.name + '=' + Array.from(tr.querySelectorAll('.sampled')).map(e => e.textContent).join())`,
		func(v []string) bool {
			got := strings.Join(v, " ")
			return slices.Contains(v, "orch-0=") && regexp.MustCompile(`desk-a=sampled \d+ s ago`).MatchString(got) &&
				regexp.MustCompile(`desk-b=sampled \d+ s ago`).MatchString(got)
		})
	checkNarrowWindow(t, b)
	var stored string
	b.eval(`return localStorage.getItem('chiffon.token')`, &stored)
	if stored != token {
		t.Errorf("localStorage token = %q", stored)
	}
	waitPage(b, 10*time.Second, "the leader and the work panel", `return [
	  document.getElementById('leader').innerText,
	  document.getElementById('card-work').hidden ? 'hidden' : document.getElementById('work-pending').innerText]`,
		func(v []string) bool { return strings.HasPrefix(v[0], "orch-0") && v[1] == "0" })

	// Kill desk-b without leaving: the open page follows it to suspect.
	b.eval(`window.chiffonNoReload = true; return null`, nil)
	killed := time.Now()
	tc.Kill("desk-b")
	waitPage(b, 15*time.Second, "desk-b suspect without a reload", rowsScript, func(rs []row) bool {
		return statuses(rs)["desk-b"] == "suspect"
	})
	t.Logf("page showed desk-b suspect %s after the kill", time.Since(killed).Round(time.Millisecond))
	var same bool
	b.eval(`return window.chiffonNoReload === true`, &same)
	if !same {
		t.Error("the page reloaded")
	}
	if st := statuses(waitPage(b, time.Second, "rows", rowsScript, func([]row) bool { return true })); st["desk-a"] != "online" {
		t.Errorf("desk-a %s, want online", st["desk-a"])
	}

	// desk-a says it is going to sleep: the page shows it asleep, in its
	// own colour.
	if err := tc.Node("desk-a").Suspend(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitPage(b, 10*time.Second, "desk-a asleep", `return Array.from(document.querySelectorAll('#node-rows tr[data-name="desk-a"] .pill')).map(p => p.className + ' ' + p.innerText)`,
		func(pills []string) bool { return len(pills) > 0 && pills[0] == "pill s-asleep asleep" })

	// The orchestrator goes away: the page says so and keeps retrying.
	tc.Kill("orch-0")
	banner := waitPage(b, 15*time.Second, "the connection-lost banner", `return document.getElementById('banner').innerText`,
		func(s string) bool { return strings.Contains(s, "Connection lost") })
	if !strings.Contains(banner, orch.APIAddr()) {
		t.Errorf("banner %q does not name %s", banner, orch.APIAddr())
	}
	t.Logf("banner: %s", banner)
}

// narrow is what checkNarrowWindow measures on the page.
type narrow struct {
	Viewport, PageWidth, TableRight float64
	// Cut lists the GPU names drawn narrower than their text.
	Cut []string
	// Columns are the header cells' widths, for the failure message.
	Columns []string
}

// checkNarrowWindow shrinks the window to 820 px, a laptop's half screen:
// the table fits (nothing scrolls the page sideways) and every GPU name
// reads in full, then the window is widened again.
func checkNarrowWindow(t *testing.T, b *browser) {
	t.Helper()
	b.call(http.MethodPost, "/window/rect", map[string]int{"width": 820, "height": 900}, nil)
	defer b.call(http.MethodPost, "/window/rect", map[string]int{"width": 1400, "height": 900}, nil)
	const script = `const d = document.documentElement;
return {Viewport: d.clientWidth, PageWidth: d.scrollWidth,
  TableRight: document.getElementById('nodes').getBoundingClientRect().right,
  Cut: Array.from(document.querySelectorAll('#node-rows .gpu-name')).filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent),
  Columns: Array.from(document.querySelectorAll('#nodes th')).map(e => e.innerText + ': ' + Math.round(e.getBoundingClientRect().width))}`
	m := waitPage(b, 5*time.Second, "the window at 820 px", script, func(m narrow) bool { return m.Viewport > 0 && m.Viewport <= 820 })
	if m.PageWidth > m.Viewport || m.TableRight > m.Viewport+1 {
		t.Errorf("at %.0f px the page is %.0f px wide and the table ends at %.0f px; want both within the window; columns %q",
			m.Viewport, m.PageWidth, m.TableRight, m.Columns)
	}
	if len(m.Cut) > 0 {
		t.Errorf("at %.0f px these GPU names are cut: %q", m.Viewport, m.Cut)
	}
}
