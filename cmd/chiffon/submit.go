package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/cli"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

// submitCommand publishes a work request to RabbitMQ and, with -wait,
// prints its result.
type submitCommand struct{ ui cli.Ui }

type submitSettings struct {
	amqpURL, queue, gpuType, agent, workID, payload string
	minVRAM, minCores                               int
	wait                                            time.Duration
}

func (s *submitSettings) options() *options {
	*s = submitSettings{queue: "chiffon.work"}
	o := &options{}
	o.str(&s.amqpURL, "amqp-url", "RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672")
	o.str(&s.queue, "amqp-work-queue", "queue the cluster consumes work from")
	o.integer(&s.minVRAM, "min-gpu-vram-gb", "free VRAM the work needs on one GPU, in GB")
	o.integer(&s.minCores, "min-cpu-cores", "idle CPU cores the work needs")
	o.str(&s.gpuType, "gpu-type", "GPU vendor the node must have: nvidia, amd or intel")
	o.str(&s.agent, "agent", "pin the work to this agent_id")
	o.str(&s.workID, "work-id", "idempotency key (default: a new random ID)")
	o.str(&s.payload, "payload", "the payload: JSON, or @FILE to read it from a file")
	o.duration(&s.wait, "wait", "wait this long for the result and print it (0: do not wait)")
	return o
}

func (c *submitCommand) Synopsis() string { return "Publish a work request to RabbitMQ" }

func (c *submitCommand) Help() string {
	var s submitSettings
	return `Usage: chiffon submit -amqp-url URL -payload JSON|@FILE [options]

  Publishes a persistent work request to the cluster's work queue. The
  leader records it, places it on a desktop that meets the requirements and
  publishes the result to the reply queue (with -wait, a private queue this
  command reads) or to chiffon.results. Prints the work_id; with -wait,
  prints the result as JSON and exits 0 if the work succeeded, 1 if not.

Options:

` + s.options().help()
}

func (c *submitCommand) Run(args []string) int {
	var s submitSettings
	o := s.options()
	rest, err := o.parse("submit", args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var payload []byte
	if err == nil {
		payload, err = s.check(rest)
	}
	if err != nil {
		c.ui.Error("chiffon submit: " + strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	}
	if s.workID == "" {
		s.workID = newWorkID()
	}
	body, err := json.Marshal(apitype.WorkRequest{WorkID: s.workID, AgentID: s.agent, Payload: payload,
		Requirements: apitype.Requirements{MinGPUVRAMGB: float64(s.minVRAM), MinCPUCores: float64(s.minCores), GPUType: s.gpuType}})
	if err != nil {
		c.ui.Error("chiffon submit: " + err.Error())
		return 1
	}
	res, err := publishRequest(s, body)
	if err != nil {
		c.ui.Error("chiffon submit: " + err.Error())
		return 1
	}
	if res == nil {
		c.ui.Output(s.workID)
		return 0
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	c.ui.Output(string(out))
	if res.Status != "succeeded" {
		return 1
	}
	return 0
}

// check validates the settings and returns the payload.
func (s *submitSettings) check(rest []string) ([]byte, error) {
	switch {
	case len(rest) > 0:
		return nil, fmt.Errorf("unexpected arguments %q", rest)
	case s.amqpURL == "":
		return nil, errors.New("-amqp-url is required (or CHIFFON_AMQP_URL)")
	case s.payload == "":
		return nil, errors.New("-payload is required: JSON, or @FILE")
	}
	if err := checkChoice("gpu-type", s.gpuType, true, apitype.GPUVendors...); err != nil {
		return nil, err
	}
	p := []byte(s.payload)
	if name, ok := strings.CutPrefix(s.payload, "@"); ok {
		var err error
		if p, err = os.ReadFile(name); err != nil {
			return nil, fmt.Errorf("-payload: %v", err)
		}
	}
	if !json.Valid(p) {
		return nil, errors.New("-payload: not valid JSON (quote a string: -payload '\"text\"')")
	}
	return p, nil
}

// publishRequest publishes body persistently with a publisher confirm; with
// s.wait it reads the result from an exclusive reply queue.
func publishRequest(s submitSettings, body []byte) (*apitype.WorkResult, error) {
	conn, err := amqp.DialConfig(s.amqpURL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	if err != nil {
		return nil, fmt.Errorf("cannot reach RabbitMQ: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	if _, err := ch.QueueDeclare(s.queue, true, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("declare %s: %v", s.queue, err)
	}
	pub := amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body,
		CorrelationId: s.workID, Timestamp: time.Now()}
	var replies <-chan amqp.Delivery
	if s.wait > 0 {
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			return nil, fmt.Errorf("declare reply queue: %v", err)
		}
		if replies, err = ch.Consume(q.Name, "", true, true, false, false, nil); err != nil {
			return nil, err
		}
		pub.ReplyTo = q.Name
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second+s.wait)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", s.queue, false, false, pub)
	if err != nil {
		return nil, fmt.Errorf("publish: %v", err)
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		return nil, fmt.Errorf("the broker did not confirm the request (%v)", err)
	}
	if replies == nil {
		return nil, nil
	}
	timeout := time.NewTimer(s.wait)
	defer timeout.Stop()
	for {
		select {
		case d, ok := <-replies:
			if !ok {
				return nil, errors.New("connection to RabbitMQ lost while waiting for the result")
			}
			if d.CorrelationId != s.workID {
				continue
			}
			var r apitype.WorkResult
			if err := json.Unmarshal(d.Body, &r); err != nil {
				return nil, fmt.Errorf("undecodable result: %v", err)
			}
			return &r, nil
		case <-timeout.C:
			return nil, fmt.Errorf("no result within %s; the work continues: chiffon work status %s", s.wait, s.workID)
		}
	}
}

// newWorkID returns a random version-4 UUID.
func newWorkID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
