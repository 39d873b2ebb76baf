package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/cli"
)

// workCommand is `chiffon work status ID`: a work item's state from the
// HTTP API.
type workCommand struct{ ui cli.Ui }

type workSettings struct{ addr, token string }

func (s *workSettings) options() *options {
	*s = workSettings{addr: "127.0.0.1:8480"}
	o := &options{}
	o.str(&s.addr, "http-addr", "HTTP API address of any orchestrator: host:port or http(s)://host:port")
	o.str(&s.token, "http-token", "API token, sent as \"Authorization: Bearer <token>\"")
	return o
}

func (c *workCommand) Synopsis() string { return "Show a work item's status" }

func (c *workCommand) Help() string {
	var s workSettings
	return `Usage: chiffon work status WORK_ID [options]

  Prints the work item as the registry holds it (GET /v1/work/WORK_ID):
  status, node, GPU, attempts, times, exit code, output and error.

Options:

` + s.options().help()
}

func (c *workCommand) Run(args []string) int {
	var s workSettings
	o := s.options()
	rest, err := o.parse("work", args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && (len(rest) != 2 || rest[0] != "status") {
		err = errors.New("want: chiffon work status WORK_ID")
	}
	if err != nil {
		c.ui.Error("chiffon work: " + strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	}
	base := s.addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/v1/work/"+url.PathEscape(rest[1]), nil)
	if err != nil {
		c.ui.Error("chiffon work: " + err.Error())
		return 2
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.ui.Error(fmt.Sprintf("chiffon work: cannot reach the HTTP API at %s: %v (is an orchestrator running? see -http-addr)", s.addr, err))
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		c.ui.Error(fmt.Sprintf("chiffon work: %s (HTTP %d)", e.Error, resp.StatusCode))
		return 1
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		c.ui.Error("chiffon work: undecodable answer: " + err.Error())
		return 1
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	c.ui.Output(string(out))
	return 0
}
