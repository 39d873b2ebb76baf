package api

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/chiffon-dev/chiffon/consensus"
)

// newDefaultRegistry is the registry a Server makes when Config.Metrics is
// nil: Go runtime and process metrics, plus the server's own.
func newDefaultRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// metrics are the HTTP request metrics; raft and registry state is read at
// scrape time by stateCollector, the fleet's capacity and the work queue
// by fleetCollector (fleetmetrics.go).
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	forwards *prometheus.CounterVec
	inFlight prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, s *Server) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "chiffon", Subsystem: "http", Name: "requests_total",
			Help: "HTTP API requests answered, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "chiffon", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "HTTP API request latency, by route and status code (forwarding and blocking waits included).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route", "code"}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "chiffon", Subsystem: "http", Name: "forwarded_total",
			Help: "Requests forwarded to the leader, by result: ok (first try), retried (answered after retrying), failed (503); local counts those of them this node answered from its replica after catching up with the leader's read index.",
		}, []string{"result"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "chiffon", Subsystem: "http", Name: "requests_in_flight",
			Help: "HTTP API requests being answered now (blocking queries included).",
		}),
	}
	fc := &fleetCollector{reg: s.reg, work: s.cfg.Work, now: time.Now}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.forwards, m.inFlight, &stateCollector{s: s}, fc} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) forwarded(attempt int) {
	if attempt == 0 {
		m.forwards.WithLabelValues("ok").Inc()
	} else {
		m.forwards.WithLabelValues("retried").Inc()
	}
}

func (m *metrics) forwardFailed() { m.forwards.WithLabelValues("failed").Inc() }

func (m *metrics) renderedLocally() { m.forwards.WithLabelValues("local").Inc() }

// routeObserver caches one route's series per status code, so that a
// request costs no label hashing.
type routeObserver struct {
	m    *metrics
	name string
	// codes maps a status code to its *routeSeries.
	codes sync.Map
}

type routeSeries struct {
	count prometheus.Counter
	dur   prometheus.Observer
}

func (m *metrics) route(name string) *routeObserver { return &routeObserver{m: m, name: name} }

func (o *routeObserver) observe(code int, d time.Duration) {
	v, ok := o.codes.Load(code)
	if !ok {
		c := strconv.Itoa(code)
		v, _ = o.codes.LoadOrStore(code, &routeSeries{
			count: o.m.requests.WithLabelValues(o.name, c),
			dur:   o.m.duration.WithLabelValues(o.name, c),
		})
	}
	rs := v.(*routeSeries)
	rs.count.Inc()
	rs.dur.Observe(d.Seconds())
}

// stateCollector reports raft and registry state when scraped.
type stateCollector struct{ s *Server }

var (
	descRaftLeader      = prometheus.NewDesc("chiffon_raft_leader", "1 if this node is the raft leader, else 0.", nil, nil)
	descRaftState       = prometheus.NewDesc("chiffon_raft_state", "1 for this node's current raft state.", []string{"state"}, nil)
	descRaftTerm        = prometheus.NewDesc("chiffon_raft_term", "Current raft term.", nil, nil)
	descRaftCommitIndex = prometheus.NewDesc("chiffon_raft_commit_index", "Highest raft log index known committed.", nil, nil)
	descRaftApplied     = prometheus.NewDesc("chiffon_raft_applied_index", "Highest raft log index applied locally.", nil, nil)
	descRaftLastLog     = prometheus.NewDesc("chiffon_raft_last_log_index", "Last raft log index stored locally.", nil, nil)
	descRaftLastContact = prometheus.NewDesc("chiffon_raft_last_contact_seconds", "Seconds since this node last heard from the leader while keeping up with it (since its log appends started failing, when they fail); 0 on the leader, -1 if never.", nil, nil)
	descRaftCanPersist  = prometheus.NewDesc("chiffon_raft_can_persist", "0 from a failed raft log append (a full disk) until an append succeeds again, else 1.", nil, nil)
	descRaftIndexLag    = prometheus.NewDesc("chiffon_raft_index_lag", "Committed raft entries not yet applied here: the highest commit index this node knows of (the leader's) minus its applied index.", nil, nil)
	descRaftLastAppend  = prometheus.NewDesc("chiffon_raft_last_append_seconds", "Seconds since a raft log append last succeeded here, -1 if none since start (it grows on an idle cluster: read it with chiffon_raft_can_persist).", nil, nil)
	descRegistryIndex   = prometheus.NewDesc("chiffon_registry_index", "Raft index of the last applied registry change.", nil, nil)
	descRegistryAgents  = prometheus.NewDesc("chiffon_registry_agents", "Registry records by status.", []string{"status"}, nil)
	descViewRebuilds    = prometheus.NewDesc("chiffon_http_capacity_view_rebuilds_total", "Rebuilds of the precomputed capacity view (one per registry index that a capacity query saw).", nil, nil)
)

// raftStates are raft's state names as Stats reports them.
var raftStates = []string{"Follower", "Candidate", "Leader", "Shutdown"}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftLeader, descRaftState, descRaftTerm, descRaftCommitIndex,
		descRaftApplied, descRaftLastLog, descRaftLastContact, descRaftCanPersist, descRaftIndexLag, descRaftLastAppend,
		descRegistryIndex, descRegistryAgents, descViewRebuilds} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	num := func(str string) float64 {
		f, _ := strconv.ParseFloat(str, 64)
		return f
	}
	st := s.raft.Stats()
	leader := 0.0
	if s.raft.IsLeader() {
		leader = 1
	}
	gauge(descRaftLeader, leader)
	for _, name := range raftStates {
		v := 0.0
		if st["state"] == name {
			v = 1
		}
		gauge(descRaftState, v, name)
	}
	gauge(descRaftTerm, num(st["term"]))
	gauge(descRaftCommitIndex, num(st["commit_index"]))
	gauge(descRaftApplied, num(st["applied_index"]))
	gauge(descRaftLastLog, num(st["last_log_index"]))
	hl := s.health()
	lc := -1.0
	switch t := hl.LastContact; {
	case leader == 1:
		lc = 0
	case !t.IsZero():
		lc = time.Since(t).Seconds()
	}
	gauge(descRaftLastContact, lc)
	canPersist := 1.0
	if !hl.CanPersist {
		canPersist = 0
	}
	gauge(descRaftCanPersist, canPersist)
	gauge(descRaftIndexLag, float64(hl.Lag()))
	lastAppend := -1.0
	if !hl.LastAppend.IsZero() {
		lastAppend = time.Since(hl.LastAppend).Seconds()
	}
	gauge(descRaftLastAppend, lastAppend)
	gauge(descRegistryIndex, float64(s.reg.Index()))
	counts := s.reg.Counts()
	for _, status := range consensus.Statuses {
		gauge(descRegistryAgents, float64(counts[status]), string(status))
	}
	ch <- prometheus.MustNewConstMetric(descViewRebuilds, prometheus.CounterValue, float64(s.views.builds.Load()))
}
