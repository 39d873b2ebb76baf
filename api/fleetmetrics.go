package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/fleet"
)

// The fleet's capacity on /metrics: read from the local registry replica
// at scrape time (one List per scrape, nothing kept between scrapes, no
// goroutine per agent), in Prometheus base units. The registry records GB
// as GiB (the probe divides bytes by 2^30), so bytes are GB × 2^30.
// Label sets are bounded by the fleet: agent name and id, GPU index and
// model, gpu_type, and the finite statuses. docs/OPERATIONS.md has example
// PromQL.

// bytesPerGB converts the registry's GB (GiB) to bytes.
const bytesPerGB = 1 << 30

// agentLabels label every per-agent series; gpuLabels every per-GPU one.
var (
	agentLabels = []string{"agent", "agent_id", "gpu_type"}
	gpuLabels   = []string{"agent", "agent_id", "gpu_type", "gpu", "model"}
)

// agentState is a one-hot state gauge per agent: one series per possible
// value, 1 for the agent's current one and 0 for the others, so that
// `sum by (status)` counts agents and changes() sees every change.
type agentState struct {
	desc   *prometheus.Desc
	values []string
	of     func(r *consensus.Record) string
}

var (
	descAgentStatus = prometheus.NewDesc("chiffon_agent_status",
		"1 for the agent's current registry status, 0 for the others.", append(agentLabels, "status"), nil)

	descAgentOwner = prometheus.NewDesc("chiffon_agent_owner",
		"1 for the state of the desktop's owner (active: at the keyboard, no new work; idle; unknown: not watched), 0 for the others.",
		append(agentLabels, "owner"), nil)

	descAgentLoad1 = prometheus.NewDesc("chiffon_agent_cpu_load1",
		"The agent's 1-minute load average, as last gossiped.", agentLabels, nil)
	descAgentCores = prometheus.NewDesc("chiffon_agent_cpu_cores",
		"The agent's physical CPU cores.", agentLabels, nil)
	descAgentCoresFree = prometheus.NewDesc("chiffon_agent_cpu_cores_free",
		"The agent's idle cores (physical cores less load), as last gossiped.", agentLabels, nil)
	descAgentMemFree = prometheus.NewDesc("chiffon_agent_memory_available_bytes",
		"RAM available to new work on the agent, as last gossiped.", agentLabels, nil)
	descAgentMemUsed = prometheus.NewDesc("chiffon_agent_memory_used_ratio",
		"Share of the agent's RAM in use, 0–1.", agentLabels, nil)
	descAgentSlots = prometheus.NewDesc("chiffon_agent_work_slots",
		"Work items the agent runs at once (0: no work handler).", agentLabels, nil)
	descAgentHeartbeat = prometheus.NewDesc("chiffon_agent_last_heartbeat_timestamp_seconds",
		"When the leader last heard of the agent (Unix time).", agentLabels, nil)
	descAgentStatusChanged = prometheus.NewDesc("chiffon_agent_status_changed_timestamp_seconds",
		"When the agent's status last changed (Unix time); changes() over it counts status changes.", agentLabels, nil)

	descGPUTotal = prometheus.NewDesc("chiffon_gpu_memory_total_bytes",
		"A GPU's memory. gpu=\"-1\" is an agent that reports only its total VRAM, not per GPU.", gpuLabels, nil)
	descGPUFree = prometheus.NewDesc("chiffon_gpu_memory_free_bytes",
		"A GPU's unused memory, as last gossiped (work placed since is not subtracted).", gpuLabels, nil)
	descGPUUtil = prometheus.NewDesc("chiffon_gpu_utilization_ratio",
		"A GPU's compute utilisation, 0–1, as last gossiped; absent when the probe cannot read it.", gpuLabels, nil)

	descFleetVRAMFree = prometheus.NewDesc("chiffon_fleet_gpu_memory_free_bytes",
		"Unused GPU memory on online desktops, all GPUs together, as last gossiped.", nil, nil)
	descFleetVRAMTotal = prometheus.NewDesc("chiffon_fleet_gpu_memory_total_bytes",
		"GPU memory of online desktops, all GPUs together.", nil, nil)
	descFleetCoresFree = prometheus.NewDesc("chiffon_fleet_cpu_cores_free",
		"Idle CPU cores on online desktops.", nil, nil)
	descFleetDesktops = prometheus.NewDesc("chiffon_fleet_desktops",
		"Desktops (agents with the desktop role) in the registry, by status.", []string{"status"}, nil)

	descWorkItems = prometheus.NewDesc("chiffon_work_items",
		"Work items in the registry, by status; status=\"pending\" is the queue waiting for capacity (finished items stay until -work-retention).", []string{"status"}, nil)
	descWorkPendingAge = prometheus.NewDesc("chiffon_work_pending_oldest_age_seconds",
		"Seconds since the oldest pending work item was submitted; 0 when none is pending.", nil, nil)
)

// agentStates are the one-hot state gauges of every agent (see agentState).
var agentStates = []agentState{
	{desc: descAgentStatus, values: statusNames(), of: func(r *consensus.Record) string { return string(r.Status) }},
	{desc: descAgentOwner, values: []string{consensus.OwnerActive, consensus.OwnerIdle, "unknown"}, of: func(r *consensus.Record) string {
		if r.Owner == "" {
			return "unknown"
		}
		return r.Owner
	}},
}

func statusNames() []string {
	out := make([]string, len(consensus.Statuses))
	for i, s := range consensus.Statuses {
		out[i] = string(s)
	}
	return out
}

// fleetCollector reports the fleet's capacity and the work queue when
// scraped, from the local replica (as ?stale reads do: every orchestrator
// reports, and they agree once caught up).
type fleetCollector struct {
	reg  Registry
	work WorkReader // nil: no work series
	now  func() time.Time
}

var _ prometheus.Collector = (*fleetCollector)(nil)

// Describe implements prometheus.Collector.
func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, st := range agentStates {
		ch <- st.desc
	}
	for _, d := range []*prometheus.Desc{descAgentLoad1, descAgentCores, descAgentCoresFree, descAgentMemFree,
		descAgentMemUsed, descAgentSlots, descAgentHeartbeat, descAgentStatusChanged, descGPUTotal, descGPUFree,
		descGPUUtil, descFleetVRAMFree, descFleetVRAMTotal, descFleetCoresFree, descFleetDesktops,
		descWorkItems, descWorkPendingAge} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	timestamp := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	}
	var vramFree, vramTotal, coresFree float64
	desktops := make(map[consensus.Status]int, len(consensus.Statuses))
	recs := c.reg.List()
	for i := range recs {
		r := &recs[i]
		m := &r.Metrics
		gpuType := m.GPUType
		if gpuType == "" {
			gpuType = fleet.GPUTypeNone
		}
		al := []string{r.Name, r.AgentID, gpuType}
		for _, st := range agentStates {
			cur := st.of(r)
			for _, v := range st.values {
				on := 0.0
				if v == cur {
					on = 1
				}
				gauge(st.desc, on, append(al, v)...)
			}
		}
		gauge(descAgentLoad1, m.CPULoad1Min, al...)
		gauge(descAgentCores, float64(m.CPUCoresPhysical), al...)
		gauge(descAgentCoresFree, m.CPUCoresAvailable, al...)
		gauge(descAgentMemFree, m.MemoryAvailableGB*bytesPerGB, al...)
		gauge(descAgentMemUsed, m.MemoryPercent/100, al...)
		gauge(descAgentSlots, float64(r.WorkSlots), al...)
		gauge(descAgentHeartbeat, timestamp(r.LastHeartbeatAt), al...)
		gauge(descAgentStatusChanged, timestamp(r.StatusChangedAt), al...)
		switch {
		case len(m.GPUs) > 0:
			for _, g := range m.GPUs {
				gl := []string{r.Name, r.AgentID, gpuType, strconv.Itoa(g.Index), g.Name}
				gauge(descGPUTotal, g.VRAMTotalGB*bytesPerGB, gl...)
				gauge(descGPUFree, g.VRAMFreeGB*bytesPerGB, gl...)
				if g.UtilizationPct >= 0 { // -1: the probe could not read it
					gauge(descGPUUtil, g.UtilizationPct/100, gl...)
				}
			}
		case m.GPUVRAMTotalGB > 0:
			gl := []string{r.Name, r.AgentID, gpuType, "-1", ""}
			gauge(descGPUTotal, m.GPUVRAMTotalGB*bytesPerGB, gl...)
			gauge(descGPUFree, m.GPUVRAMAvailableGB*bytesPerGB, gl...)
		}
		if !r.HasRole(fleet.RoleDesktop) {
			continue
		}
		desktops[r.Status]++
		if r.Status == consensus.StatusOnline {
			vramFree += m.GPUVRAMAvailableGB
			vramTotal += m.GPUVRAMTotalGB
			coresFree += m.CPUCoresAvailable
		}
	}
	gauge(descFleetVRAMFree, vramFree*bytesPerGB)
	gauge(descFleetVRAMTotal, vramTotal*bytesPerGB)
	gauge(descFleetCoresFree, coresFree)
	for _, s := range consensus.Statuses {
		gauge(descFleetDesktops, float64(desktops[s]), string(s))
	}

	if c.work == nil {
		return
	}
	counts := c.work.WorkCounts()
	for _, s := range consensus.WorkStatuses {
		gauge(descWorkItems, float64(counts[s]), string(s))
	}
	age := 0.0
	if oldest, _, _ := c.work.WorkPage(consensus.WorkKey{}, 1, consensus.WorkPending); len(oldest) > 0 {
		age = max(0, c.now().Sub(oldest[0].SubmittedAt).Seconds())
	}
	gauge(descWorkPendingAge, age)
}
