package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/api/client"
)

// workCommand only groups the work subcommands.
type workCommand struct{ ui cli.Ui }

func (c *workCommand) Synopsis() string { return "Show a work item, or list work items (HTTP API)" }
func (c *workCommand) Help() string {
	return `Usage: chiffon work <subcommand> [options]

  Work items as the registry holds them. Subcommands:

    status    one work item: status, node, GPU, attempts, times, exit code, output
    list      work items, oldest submission first`
}
func (c *workCommand) Run(args []string) int { return groupRun(c.ui, "work", args) }

// workStatusCommand is `chiffon work status [options] WORK_ID`.
type workStatusCommand struct{ ui cli.Ui }

type workStatusSettings struct {
	http     httpSettings
	stale    bool
	maxStale time.Duration
}

func (s *workStatusSettings) options() *options {
	*s = workStatusSettings{}
	o := &options{}
	s.http.add(o)
	o.boolean(&s.stale, "stale", "answer from the contacted node's replica instead of the leader's")
	o.duration(&s.maxStale, "max-stale", maxStaleUsage)
	return o
}

func (c *workStatusCommand) Synopsis() string { return "Show a work item (HTTP API)" }

func (c *workStatusCommand) Help() string {
	var s workStatusSettings
	return `Usage: chiffon work status [options] WORK_ID

  Prints the work item as the registry holds it (GET /v1/work/WORK_ID):
  status, node, GPU, attempts, times, exit code, output and error. Any
  orchestrator answers with the leader's state (or its own with -stale).

Options:

` + s.options().help()
}

func (c *workStatusCommand) Run(args []string) int {
	var s workStatusSettings
	rest, code, done := parseCommon(c.ui, "work status", s.options(), args, func(rest []string) error {
		if len(rest) != 1 {
			return errors.New("want: chiffon work status [options] WORK_ID")
		}
		return checkMaxStale(s.maxStale, false)
	})
	if done {
		return code
	}
	var item apitype.WorkItem
	if code := s.http.call(c.ui, "work status", func(ctx context.Context, cl *client.Client) (err error) {
		item, _, err = cl.Work(ctx, rest[0], &client.QueryOptions{Stale: s.stale, MaxStale: s.maxStale})
		return err
	}); code != 0 {
		return code
	}
	outputJSON(c.ui, item)
	return 0
}

// workListCommand is `chiffon work list [options]`.
type workListCommand struct{ ui cli.Ui }

type workListSettings struct {
	http           httpSettings
	stale          bool
	maxStale       time.Duration
	status, format string
	limit          int
}

func (s *workListSettings) options() *options {
	*s = workListSettings{format: "table", limit: 100}
	o := &options{}
	s.http.add(o)
	o.boolean(&s.stale, "stale", "answer from the contacted node's replica instead of the leader's")
	o.duration(&s.maxStale, "max-stale", maxStaleUsage)
	o.str(&s.status, "status", "only items in this status: "+strings.Join(apitype.WorkStatuses, ", "))
	o.integer(&s.limit, "limit", fmt.Sprintf("at most this many items, oldest first (1 to %d)", apitype.MaxWorkPage))
	o.str(&s.format, "format", "output format: table or json")
	return o
}

func (c *workListCommand) Synopsis() string { return "List work items (HTTP API)" }

func (c *workListCommand) Help() string {
	var s workListSettings
	return `Usage: chiffon work list [options]

  Lists work items, oldest submission first, without payloads and outputs
  (GET /v1/work), and says how many more match. Any orchestrator answers
  with the leader's state (or its own with -stale).

Options:

` + s.options().help()
}

func (c *workListCommand) Run(args []string) int {
	var s workListSettings
	_, code, done := parseCommon(c.ui, "work list", s.options(), args, func(rest []string) error {
		if len(rest) > 0 {
			return fmt.Errorf("unexpected arguments %q", rest)
		}
		if err := checkChoice("status", s.status, true, apitype.WorkStatuses...); err != nil {
			return err
		}
		if s.limit < 1 || s.limit > apitype.MaxWorkPage {
			return fmt.Errorf("-limit: %d; allowed: 1 to %d", s.limit, apitype.MaxWorkPage)
		}
		if err := checkMaxStale(s.maxStale, false); err != nil {
			return err
		}
		return checkFormat(s.format)
	})
	if done {
		return code
	}
	var page apitype.WorkList
	if code := s.http.call(c.ui, "work list", func(ctx context.Context, cl *client.Client) (err error) {
		page, _, err = cl.WorkList(ctx, s.status, s.limit, "", &client.QueryOptions{Stale: s.stale, MaxStale: s.maxStale})
		return err
	}); code != 0 {
		return code
	}
	if s.format == "json" {
		outputJSON(c.ui, page.Work)
		return 0
	}
	c.ui.Output(renderWork(page, time.Now()))
	return 0
}

// renderWork prints a page of work items as a table, and how many more
// match.
func renderWork(page apitype.WorkList, now time.Time) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "WORK ID\tSTATUS\tAGENT ID\tGPU\tATTEMPTS\tSUBMITTED\tFINISHED\tEXIT\tERROR")
	for _, it := range page.Work {
		agent, gpu, exit := "-", "-", "-"
		if it.AgentID != "" {
			agent = it.AgentID
		}
		if it.GPUIndex >= 0 && it.AgentID != "" {
			gpu = strconv.Itoa(it.GPUIndex)
		}
		if !it.FinishedAt.IsZero() {
			exit = strconv.Itoa(it.ExitCode)
		}
		errText := it.Error
		if errText == "" {
			errText = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", it.WorkID, it.Status, agent, gpu, it.Attempts, it.MaxAttempts,
			age(it.SubmittedAt, now), age(it.FinishedAt, now), exit, errText)
	}
	w.Flush()
	out := strings.TrimRight(b.String(), "\n")
	if more := page.Total - page.Count; more > 0 {
		out += fmt.Sprintf("\n(%d of %d shown; raise -limit, or page through GET /v1/work with next_token)", page.Count, page.Total)
	}
	return out
}
