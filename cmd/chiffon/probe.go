package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/internal/logging"
	"github.com/chiffon-dev/chiffon/probe"
)

// probeCommand prints one resource sample: what this machine would gossip.
type probeCommand struct{ ui cli.Ui }

func (c *probeCommand) Synopsis() string {
	return "Print this machine's resources as a node samples them"
}

func (c *probeCommand) Help() string {
	var file, level string
	return `Usage: chiffon probe [options]

  Takes one sample of CPU, memory and GPUs (NVML, nvidia-smi, sysfs) exactly as
  'chiffon agent' does at each heartbeat, and prints it as JSON. With
  -metrics-file it prints what that file declares, after validation.

Options:

` + probeOptions(&file, &level).help()
}

func probeOptions(file, level *string) *options {
	*level = "warn"
	o := &options{}
	o.str(file, "metrics-file", "read the sample from this JSON file instead of the hardware")
	o.str(level, "log-level", "log level for the sources' messages: debug, info, warn or error")
	return o
}

func (c *probeCommand) Run(args []string) int {
	var file, levelName string
	rest, err := probeOptions(&file, &levelName).parse("probe", args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("unexpected arguments %q", rest)
	}
	level, lerr := logging.ParseLevel(levelName)
	if err == nil {
		err = lerr
	}
	if err != nil {
		c.ui.Error("chiffon probe: " + strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	}
	logger, _ := logging.New(os.Stderr, level, false)
	pc := probe.DefaultConfig()
	pc.MetricsFile = file
	pc.Logger = logger
	p, err := probe.New(pc)
	if err != nil {
		c.ui.Error("chiffon probe: " + err.Error())
		return 1
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := p.Sample(ctx)
	if err != nil {
		c.ui.Error("chiffon probe: " + err.Error())
		return 1
	}
	b, _ := json.MarshalIndent(struct {
		probe.Sample
		MaxFree float64 `json:"gpu_vram_max_free_gb"`
	}{s, s.MaxFreeVRAMGB()}, "", "  ")
	c.ui.Output(string(b))
	return 0
}
