package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/api/client"
)

// httpSettings are the client options every HTTP API subcommand shares
// (agents, capacity, operator raft ...).
type httpSettings struct {
	addr, token            string
	tlsCA, tlsCert, tlsKey string
}

// add registers the shared options on o, with their defaults.
func (h *httpSettings) add(o *options) {
	*h = httpSettings{addr: "127.0.0.1:8480"}
	o.str(&h.addr, "http-addr", "HTTP API address of any orchestrator: host:port or http(s)://host:port")
	o.str(&h.token, "http-token", "API token, sent as \"Authorization: Bearer <token>\"")
	o.str(&h.tlsCA, "tls-ca", "PEM file of the CA to verify the server with (implies https)")
	o.str(&h.tlsCert, "tls-cert", "PEM client certificate, when the server requires one (implies https)")
	o.str(&h.tlsKey, "tls-key", "PEM key of -tls-cert")
}

// client builds the API client. Its errors are usage errors.
func (h *httpSettings) client() (*client.Client, error) {
	cfg := client.Config{Addr: h.addr, Token: h.token}
	if h.tlsCA != "" || h.tlsCert != "" || h.tlsKey != "" {
		tc, err := client.TLSConfig(h.tlsCA, h.tlsCert, h.tlsKey)
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
	}
	return client.New(cfg)
}

// call builds the client from the flags and runs fn with a bounded context.
// It prints any error as "chiffon NAME: ..." and returns the exit code: 0,
// 2 for flags that cannot make a client, 1 for a failed call.
func (h *httpSettings) call(ui cli.Ui, name string, fn func(context.Context, *client.Client) error) int {
	cl, err := h.client()
	if err != nil {
		ui.Error("chiffon " + name + ": " + err.Error())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := fn(ctx, cl); err != nil {
		ui.Error("chiffon " + name + ": " + apiErrorText(h.addr, err))
		return 1
	}
	return 0
}

// outputJSON prints v indented, for -format json.
func outputJSON(ui cli.Ui, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	ui.Output(string(b))
}

// apiErrorText explains a failed call; an unreachable server gets a hint.
func apiErrorText(addr string, err error) string {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Message + " (HTTP " + strconv.Itoa(e.StatusCode) + ")"
	}
	return fmt.Sprintf("cannot reach the HTTP API at %s: %v (is an orchestrator running? see -http-addr)", addr, err)
}

// checkFormat validates -format.
func checkFormat(f string) error { return checkChoice("format", f, false, "table", "json") }

// checkChoice refuses a value of -flag outside allowed, saying what is
// allowed; with optional, "" (the flag not given) passes.
func checkChoice(flag, v string, optional bool, allowed ...string) error {
	if (optional && v == "") || slices.Contains(allowed, v) {
		return nil
	}
	return fmt.Errorf("-%s: %q; allowed: %s", flag, v, strings.Join(allowed, ", "))
}

// parseCommon parses args and reports usage problems; it returns the exit
// code to use when done is true.
func parseCommon(ui cli.Ui, name string, o *options, args []string, check func(rest []string) error) (rest []string, code int, done bool) {
	rest, err := o.parse(name, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, 0, true
	}
	if err == nil {
		err = check(rest)
	}
	if err != nil {
		ui.Error("chiffon " + name + ": " + strings.TrimPrefix(err.Error(), "usage: "))
		return nil, 2, true
	}
	return rest, 0, false
}

// maxStaleUsage is the help of every read command's -max-stale.
const maxStaleUsage = "answer from the contacted node's replica only if it heard from the leader within this long, else from the leader (503 when none answers); 0: no bound"

// checkMaxStale refuses a negative -max-stale, and one given with
// -consistent.
func checkMaxStale(d time.Duration, consistent bool) error {
	switch {
	case d < 0:
		return fmt.Errorf("-max-stale: %s; must be a duration ≥ 0, such as 5s", d)
	case d > 0 && consistent:
		return fmt.Errorf("-max-stale and -consistent exclude each other")
	}
	return nil
}

// callTimeout bounds one CLI call.
const callTimeout = 30 * time.Second

// agentsCommand lists the registry over the HTTP API.
type agentsCommand struct{ ui cli.Ui }

type agentsSettings struct {
	http           httpSettings
	status, format string
	stale          bool
	maxStale       time.Duration
}

func (s *agentsSettings) options() *options {
	*s = agentsSettings{format: "table"}
	o := &options{}
	s.http.add(o)
	o.str(&s.status, "status", "only agents with this status: online, suspect, offline, left or asleep")
	o.str(&s.format, "format", "output format: table or json")
	o.boolean(&s.stale, "stale", "answer from the contacted node's replica instead of the leader's")
	o.duration(&s.maxStale, "max-stale", maxStaleUsage)
	return o
}

func (c *agentsCommand) Synopsis() string { return "List every agent in the registry (HTTP API)" }

func (c *agentsCommand) Help() string {
	var s agentsSettings
	return `Usage: chiffon agents [options]

  Lists every node the orchestrators' registry knows, in any status, as the
  leader sees it (or the contacted node with -stale): GET /v1/agents.

Options:

` + s.options().help()
}

func (c *agentsCommand) Run(args []string) int {
	var s agentsSettings
	_, code, done := parseCommon(c.ui, "agents", s.options(), args, func(rest []string) error {
		if len(rest) > 0 {
			return fmt.Errorf("unexpected arguments %q", rest)
		}
		if err := checkChoice("status", s.status, true, apitype.Statuses...); err != nil {
			return err
		}
		if err := checkMaxStale(s.maxStale, false); err != nil {
			return err
		}
		return checkFormat(s.format)
	})
	if done {
		return code
	}
	var agents []apitype.Agent
	if code := s.http.call(c.ui, "agents", func(ctx context.Context, cl *client.Client) (err error) {
		agents, _, err = cl.Agents(ctx, s.status, &client.QueryOptions{Stale: s.stale, MaxStale: s.maxStale})
		return err
	}); code != 0 {
		return code
	}
	if s.format == "json" {
		outputJSON(c.ui, agents)
		return 0
	}
	c.ui.Output(renderAgents(agents, time.Now()))
	return 0
}

// age renders how long ago t was, "-" for the zero time.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// sampleAge renders an answer's sample_age_s: "-" for a node that does not
// sample, tenths of a second under a minute, else minutes and seconds.
func sampleAge(s *float64) string {
	switch {
	case s == nil:
		return "-"
	case *s < 60:
		return fmt.Sprintf("%.1fs", *s)
	}
	return time.Duration(*s * float64(time.Second)).Round(time.Second).String()
}

// ownerCell is the OWNER column: "active 3m ago" while the desktop's
// owner is at the keyboard (it takes no new work), "idle …", or "-" for
// a node that does not watch its owner.
func ownerCell(a apitype.Agent, now time.Time) string {
	if a.Owner == "" {
		return "-"
	}
	if a.OwnerSince == nil {
		return a.Owner
	}
	return a.Owner + " " + age(*a.OwnerSince, now)
}

func renderAgents(agents []apitype.Agent, now time.Time) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "AGENT ID\tNAME\tSTATUS\tROLES\tCORES FREE\tMEM FREE\tGPUS\tVRAM MAX FREE\tLAST SEEN\tSTATUS SINCE\tFLAPS\tSAMPLE AGE\tOWNER")
	for _, a := range agents {
		m := a.Metrics
		// Only desktops sample and gossip resources: an orchestrator-only
		// node shows none rather than a misleading 0/0.
		cores, mem, gpus, vram := "-", "-", "-", "-"
		if slices.Contains(a.Roles, apitype.RoleDesktop) {
			cores = fmt.Sprintf("%g/%d", m.CPUCoresAvailable, m.CPUCoresPhysical)
			mem = fmt.Sprintf("%.1f GB", m.MemoryAvailableGB)
			gpus = "none"
			if m.GPUCount > 0 {
				gpus = fmt.Sprintf("%d× %s", m.GPUCount, m.GPUType)
			}
			vram = fmt.Sprintf("%g GB", m.GPUVRAMMaxFreeGB)
		}
		// Gossip's status, and whether the leader can reach the work
		// endpoint (unreachable_since; absent from older servers).
		status := a.Status
		if a.UnreachableSince != nil {
			status += "/unreachable"
		}
		// FLAPS: the decayed flap score (placement prefers < 1).
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%s\t%s\n", a.AgentID, a.Name, status,
			strings.Join(a.Roles, ","), cores, mem, gpus, vram, age(a.LastHeartbeatAt, now), age(a.StatusChangedAt, now), a.FlapScore,
			sampleAge(a.SampleAgeS), ownerCell(a, now))
	}
	w.Flush()
	return strings.TrimRight(b.String(), "\n")
}
