package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/api/client"
)

// number adds a non-negative decimal option (options has whole numbers
// only).
func number(o *options, p *float64, name, usage string) {
	o.add(&option{name: name, usage: usage, def: strconv.FormatFloat(*p, 'g', -1, 64), set: func(s string) error {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("want a number such as 8 or 1.5")
		}
		if v < 0 {
			return fmt.Errorf("must not be negative")
		}
		*p = v
		return nil
	}})
}

// capacityCommand queries available capacity over the HTTP API.
type capacityCommand struct{ ui cli.Ui }

type capacitySettings struct {
	http              httpSettings
	q                 client.CapacityQuery
	agent, format     string
	stale, consistent bool
	maxStale          time.Duration
}

func (s *capacitySettings) options() *options {
	*s = capacitySettings{format: "table"}
	o := &options{}
	s.http.add(o)
	number(o, &s.q.MinGPUVRAMGB, "min-gpu-vram-gb", "least free VRAM in GB on one GPU (on all GPUs with -vram-total)")
	number(o, &s.q.MinCPUCores, "min-cpu-cores", "least available CPU cores")
	number(o, &s.q.MinMemoryAvailableGB, "min-memory-available-gb", "least available RAM in GB")
	o.str(&s.q.GPUType, "gpu-type", "only this GPU vendor: nvidia, amd, intel or none")
	o.boolean(&s.q.VRAMTotal, "vram-total", "compare -min-gpu-vram-gb with the free VRAM of all GPUs together")
	o.str(&s.agent, "agent", "show this one agent (its agent_id), in any status, instead of filtering")
	o.boolean(&s.stale, "stale", "answer from the contacted node's replica instead of the leader's")
	o.boolean(&s.consistent, "consistent", "have the leader confirm its leadership first")
	o.duration(&s.maxStale, "max-stale", maxStaleUsage)
	o.str(&s.format, "format", "output format: table or json")
	return o
}

func (c *capacityCommand) Synopsis() string { return "Find desktops with free capacity (HTTP API)" }

func (c *capacityCommand) Help() string {
	var s capacitySettings
	return `Usage: chiffon capacity [options]
       chiffon capacity -agent ID [options]

  Lists the online desktops that meet every bound given, most free VRAM on
  one GPU first, then most free cores (GET /v1/agents/available-capacity);
  with -agent, one agent's capacity whatever its status.

Options:

` + s.options().help()
}

func (c *capacityCommand) Run(args []string) int {
	var s capacitySettings
	_, code, done := parseCommon(c.ui, "capacity", s.options(), args, func(rest []string) error {
		if len(rest) > 0 {
			return fmt.Errorf("unexpected arguments %q", rest)
		}
		if err := checkChoice("gpu-type", s.q.GPUType, true, apitype.GPUTypes...); err != nil {
			return err
		}
		if s.stale && s.consistent {
			return fmt.Errorf("-stale and -consistent exclude each other")
		}
		if err := checkMaxStale(s.maxStale, s.consistent); err != nil {
			return err
		}
		if s.agent != "" && (s.q != client.CapacityQuery{}) {
			return fmt.Errorf("-agent shows one agent; it takes no filters")
		}
		return checkFormat(s.format)
	})
	if done {
		return code
	}
	opts := &client.QueryOptions{Stale: s.stale, Consistent: s.consistent, MaxStale: s.maxStale}
	var caps []apitype.Capacity
	var out any
	if code := s.http.call(c.ui, "capacity", func(ctx context.Context, cl *client.Client) error {
		if s.agent != "" {
			one, _, err := cl.AgentCapacity(ctx, s.agent, opts)
			caps, out = []apitype.Capacity{one}, one
			return err
		}
		var err error
		caps, _, err = cl.AvailableCapacity(ctx, s.q, opts)
		out = caps
		return err
	}); code != 0 {
		return code
	}
	if s.format == "json" {
		outputJSON(c.ui, out)
		return 0
	}
	c.ui.Output(renderCapacity(caps, time.Now()))
	return 0
}

func renderCapacity(caps []apitype.Capacity, now time.Time) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "AGENT ID\tNAME\tSTATUS\tCORES FREE\tMEM FREE\tGPUS\tVRAM MAX FREE\tVRAM FREE/TOTAL\tLAST SEEN\tSAMPLE AGE")
	for _, c := range caps {
		gpus, vram := "none", "-"
		if c.GPUCount > 0 {
			gpus = fmt.Sprintf("%d× %s", c.GPUCount, c.GPUType)
			vram = fmt.Sprintf("%g/%g GB", c.GPUVRAMAvailableGB, c.GPUVRAMTotalGB)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%g/%d\t%.1f GB\t%s\t%g GB\t%s\t%s\t%s\n", c.AgentID, c.Name, c.Status,
			c.CPUCoresAvailable, c.CPUCoresPhysical, c.MemoryAvailableGB, gpus, c.GPUVRAMMaxFreeGB, vram, age(c.Timestamp, now),
			sampleAge(c.SampleAgeS))
	}
	w.Flush()
	if len(caps) == 0 {
		return "No agent matches."
	}
	return strings.TrimRight(b.String(), "\n")
}
