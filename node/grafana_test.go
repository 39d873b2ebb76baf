package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node"
	"github.com/chiffon-dev/chiffon/node/nodetest"
	"github.com/chiffon-dev/chiffon/probe"
)

// dashboardFile is the Grafana dashboard shipped in scripts/grafana.
const dashboardFile = "../scripts/grafana/chiffon.json"

// The dashboard's queries are checked by a small PromQL metric-name
// extractor rather than Prometheus's own parser
// (github.com/prometheus/prometheus/promql/parser): that module, at the
// versions the proxy has (v0.313–v0.316), would raise client_golang,
// prometheus/common, x/net, x/crypto, x/sys and a dozen more of this
// module's dependencies for everyone, for one test. The extractor only
// needs to find the metric names a query selects; it knows PromQL's
// lexical structure (strings, label matchers in {}, ranges in [],
// functions and aggregations before "(", label lists after by / without /
// on / ignoring / group_left / group_right, keywords, numbers and
// durations, Grafana's $variables), and TestPromQLMetricNames pins it.

// promqlKeywords are PromQL words that are never metric names: binary
// operators and modifiers, and the aggregation operators, which may be
// followed by "by (...)" rather than by their "(".
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true, "start": true, "end": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// promqlLabelLists are the words followed by a parenthesised list of
// label names.
var promqlLabelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// metricNames returns the metric names expr selects, sorted, without
// repeats; an error for unbalanced brackets or an unterminated string.
func metricNames(expr string) ([]string, error) {
	isStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isPart := func(c byte) bool { return isStart(c) || c >= '0' && c <= '9' }
	skipSpace := func(i int) int {
		for i < len(expr) && strings.ContainsRune(" \t\r\n", rune(expr[i])) {
			i++
		}
		return i
	}
	// closing finds the bracket that closes the one at i, skipping strings.
	closing := func(i int, open, end byte) (int, error) {
		depth := 0
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; c {
			case '"', '\'', '`':
				k := strings.IndexByte(expr[j+1:], c)
				if k < 0 {
					return 0, fmt.Errorf("unterminated string at %d in %q", j, expr)
				}
				j += k + 1
			case open:
				depth++
			case end:
				if depth--; depth == 0 {
					return j, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %c at %d in %q", open, i, expr)
	}
	seen := map[string]bool{}
	parens := 0
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			k := strings.IndexByte(expr[i+1:], c)
			if k < 0 {
				return nil, fmt.Errorf("unterminated string at %d in %q", i, expr)
			}
			i += k + 2
		case c == '{':
			j, err := closing(i, '{', '}')
			if err != nil {
				return nil, err
			}
			i = j + 1
		case c == '[':
			j, err := closing(i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = j + 1
		case c == '$': // a Grafana variable: $name or ${name}
			i++
			if i < len(expr) && expr[i] == '{' {
				j, err := closing(i, '{', '}')
				if err != nil {
					return nil, err
				}
				i = j + 1
			}
			for i < len(expr) && isPart(expr[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.': // a number or duration: 5m, 1e9, 0x1f
			for i < len(expr) && (isPart(expr[i]) || expr[i] == '.') {
				i++
			}
		case isStart(c):
			j := i
			for j < len(expr) && isPart(expr[j]) {
				j++
			}
			word := expr[i:j]
			next := skipSpace(j)
			switch {
			case promqlLabelLists[strings.ToLower(word)] && next < len(expr) && expr[next] == '(':
				k, err := closing(next, '(', ')')
				if err != nil {
					return nil, err
				}
				j = k + 1
			case next < len(expr) && expr[next] == '(': // a function or aggregation
			case promqlKeywords[strings.ToLower(word)]:
			default:
				seen[word] = true
			}
			i = j
		default:
			switch c {
			case '(':
				parens++
			case ')':
				if parens--; parens < 0 {
					return nil, fmt.Errorf("unbalanced ) at %d in %q", i, expr)
				}
			case ']', '}':
				return nil, fmt.Errorf("unbalanced %c at %d in %q", c, i, expr)
			}
			i++
		}
	}
	if parens != 0 {
		return nil, fmt.Errorf("unbalanced ( in %q", expr)
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

func TestPromQLMetricNames(t *testing.T) {
	cases := []struct {
		expr string
		want []string
		bad  bool
	}{
		{expr: "up", want: []string{"up"}},
		{expr: `max by (agent, gpu) (1 - a_bytes{agent=~"$agent", x="}"} / b_bytes)`, want: []string{"a_bytes", "b_bytes"}},
		{expr: "sum by (outcome) (rate(c_total[$__rate_interval]))", want: []string{"c_total"}},
		{expr: "rate(c_total[5m] offset 1h) > 0.5 and on (instance) d == bool 1", want: []string{"c_total", "d"}},
		{expr: "x * on(a) group_left(b, c) y", want: []string{"x", "y"}},
		{expr: `topk(5, m:rule:rate5m) / 2^30 + 1e9 - Inf`, want: []string{"m:rule:rate5m"}},
		{expr: "max without (instance) (changes(t_seconds[${__range}]))", want: []string{"t_seconds"}},
		{expr: `label_values(chiffon_agent_status, agent)`, want: []string{"agent", "chiffon_agent_status"}},
		{expr: "sum(x", bad: true},
		{expr: `x{a="b}`, bad: true},
		{expr: "x[5m", bad: true},
		{expr: "x)", bad: true},
	}
	for _, c := range cases {
		got, err := metricNames(c.expr)
		if c.bad {
			if err == nil {
				t.Errorf("%q: no error; want one", c.expr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%q: %v, %v; want %v", c.expr, got, err, c.want)
		}
	}
}

// dashboardQueries returns every PromQL expression in a Grafana dashboard:
// panel targets' expr (rows' nested panels too) and query variables'
// label_values(METRIC, label) (whose label is dropped).
func dashboardQueries(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string            `json:"title"`
		UID    string            `json:"uid"`
		Panels []json.RawMessage `json:"panels"`
		Templ  struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("%s: title %q, uid %q, %d panels: not a Grafana dashboard", path, d.Title, d.UID, len(d.Panels))
	}
	out := map[string]string{}
	type panel struct {
		Title   string            `json:"title"`
		Type    string            `json:"type"`
		Panels  []json.RawMessage `json:"panels"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	}
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: panel: %v", path, err)
			}
			walk(p.Panels)
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q target %s: empty expr", p.Title, tg.RefID)
				}
				out[p.Title+"/"+tg.RefID] = tg.Expr
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templ.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil || q.Query == "" {
			var s string
			if json.Unmarshal(v.Query, &s) != nil || s == "" {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
			q.Query = s
		}
		expr, ok := strings.CutPrefix(q.Query, "label_values(")
		if !ok {
			t.Fatalf("variable %s: %q: only label_values(...) is checked", v.Name, q.Query)
		}
		if i := strings.LastIndexByte(expr, ','); i >= 0 {
			expr = expr[:i] // drop the label name
		}
		out["variable "+v.Name] = strings.TrimSuffix(expr, ")")
	}
	return out
}

// TestGrafanaDashboard_QueriesNameExposedMetrics: every metric that
// scripts/grafana/chiffon.json queries is on a real orchestrator's
// /metrics (an orchestrator and two desktops, work metrics included), so
// the dashboard cannot rot when a metric is renamed or dropped.
func TestGrafanaDashboard_QueriesNameExposedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	queries := dashboardQueries(t, dashboardFile)
	want := map[string][]string{} // metric → the queries that name it
	for where, expr := range queries {
		names, err := metricNames(expr)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", where, expr)
		}
		for _, n := range names {
			want[n] = append(want[n], where)
		}
	}
	if len(want) < 10 {
		t.Fatalf("only %d metrics found in %d queries: %v", len(want), len(queries), want)
	}

	// GPUs whose utilisation the probe reads, so that per-GPU utilisation
	// is exported.
	sample := func(i int) probe.Sample {
		s := nodetest.DefaultSample(i)
		s.GPUs[0].UtilizationPct = 40
		return s
	}
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: []string{"orch1"}, Desktops: []string{"desk-a", "desk-b"},
		Node: func(name string, c *node.Config) error {
			if strings.HasPrefix(name, "desk-") {
				c.Sampler = nodetest.NewSampler(sample(int(name[len(name)-1] - 'a')))
			}
			return nil
		}})
	tc.WaitLeader(10 * time.Second)
	url := "http://" + tc.Node("orch1").APIAddr() + "/metrics"
	testwait.Until(t, 20*time.Second, "/metrics with every metric the dashboard queries", func() (bool, string) {
		have, err := scrapeNames(url)
		if err != nil {
			return false, err.Error()
		}
		var missing []string
		for n, where := range want {
			if !have[n] {
				missing = append(missing, fmt.Sprintf("%s (in %s)", n, strings.Join(where, ", ")))
			}
		}
		sort.Strings(missing)
		return len(missing) == 0, "missing: " + strings.Join(missing, "; ")
	})
}

// scrapeNames GETs url and returns the metric names it exposes, parsed
// with Prometheus's own text parser.
func scrapeNames(url string) (map[string]bool, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for name, mf := range mfs {
		if len(mf.GetMetric()) == 0 {
			continue
		}
		out[name] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM || mf.GetType() == dto.MetricType_SUMMARY {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				out[name+suffix] = true
			}
		}
	}
	return out, nil
}
