package sim

import (
	"net/http"
	"time"

	"github.com/chiffon-dev/chiffon/node/telemetry"
)

// pushConfig is what every simulated desktop's telemetry reporter shares:
// the orchestrators' HTTP addresses (fixed for the run: the sim never
// stops an orchestrator) and one HTTP client with a pool large enough
// that pushes reuse connections. A real desktop reads the orchestrators
// from gossip and keeps its own connection; reading a thousand members'
// tags for each of a thousand desktops' pushes would cost the simulating
// process more than the fleet it measures.
type pushConfig struct {
	targets []telemetry.Target
	client  *http.Client
	min     time.Duration
	max     time.Duration
	refused time.Duration
}

func (r *run) newPushConfig() *pushConfig {
	p := &pushConfig{min: r.t.d(time.Second), max: r.t.d(telemetry.RetryMax(r.cfg.HeartbeatInterval)),
		refused: r.t.d(r.cfg.HeartbeatInterval)}
	for _, name := range r.orchs {
		if addr := r.orchestratorAPI(name); addr != "" {
			p.targets = append(p.targets, telemetry.Target{Name: name, Addr: addr})
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	var rt http.RoundTripper = tr
	if r.hops != nil {
		rt = pushTracer{next: tr, log: r.hops}
	}
	p.client = &http.Client{Transport: rt, Timeout: 10 * time.Second}
	return p
}

// reporter starts the telemetry reporter of desktop name. In-process the
// pushes honour the simulated network's cuts; in process mode the
// desktops run on loopback, where the sim makes none.
func (r *run) reporter(name string) *telemetry.Reporter {
	if r.push == nil {
		return nil
	}
	p := r.push
	cfg := telemetry.ReporterConfig{Node: name, Targets: func() []telemetry.Target { return p.targets },
		Client: p.client, MinBackoff: p.min, MaxBackoff: p.max,
		RefusedWait: p.refused, Logger: r.logger}
	if r.procs == nil {
		cfg.Reachable = func(t telemetry.Target) bool { return r.nw.Reachable(name, t.Name) }
	}
	return telemetry.NewReporter(cfg)
}

func (p *pushConfig) close() {
	if p != nil {
		p.client.CloseIdleConnections() // reaches the transport behind the tracer
	}
}
