package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/api/client"
)

// workCommand is `chiffon work status ID`: a work item's state from the
// HTTP API.
type workCommand struct{ ui cli.Ui }

type workSettings struct {
	http  httpSettings
	stale bool
}

func (s *workSettings) options() *options {
	*s = workSettings{}
	o := &options{}
	s.http.add(o)
	o.boolean(&s.stale, "stale", "answer from the contacted node's replica instead of the leader's")
	return o
}

func (c *workCommand) Synopsis() string { return "Show a work item's status" }

func (c *workCommand) Help() string {
	var s workSettings
	return `Usage: chiffon work status WORK_ID [options]

  Prints the work item as the registry holds it (GET /v1/work/WORK_ID):
  status, node, GPU, attempts, times, exit code, output and error. Any
  orchestrator answers with the leader's state (or its own with -stale).

Options:

` + s.options().help()
}

func (c *workCommand) Run(args []string) int {
	var s workSettings
	rest, code, done := parseCommon(c.ui, "work", s.options(), args, func(rest []string) error {
		if len(rest) != 2 || rest[0] != "status" {
			return errors.New("want: chiffon work status WORK_ID")
		}
		return nil
	})
	if done {
		return code
	}
	var item json.RawMessage
	if code := s.http.call(c.ui, "work", func(ctx context.Context, cl *client.Client) (err error) {
		item, _, err = cl.Work(ctx, rest[1], &client.QueryOptions{Stale: s.stale})
		return err
	}); code != 0 {
		return code
	}
	var out bytes.Buffer
	if err := json.Indent(&out, item, "", "  "); err != nil {
		c.ui.Error("chiffon work: undecodable answer: " + err.Error())
		return 1
	}
	c.ui.Output(strings.TrimRight(out.String(), "\n"))
	return 0
}
