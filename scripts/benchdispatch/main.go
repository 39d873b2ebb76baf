// Command benchdispatch measures work dispatch through RabbitMQ for
// scripts/bench-dispatch.sh. It has four modes:
//
//	benchdispatch -amqp-url URL -mode raw -n N
//	    the broker alone: publish N persistent messages with publisher
//	    confirms to a fresh durable queue while a consumer (manual acks,
//	    prefetch 64) reads them; time from the first publish to the last
//	    message consumed.
//	benchdispatch -amqp-url URL -mode e2e -n N [-queue chiffon.work]
//	    Chiffon end to end: publish N persistent work requests (unique
//	    work_ids, reply_to a fresh queue, confirms) to the work queue and
//	    time from the first publish until a result for each of the N
//	    work_ids arrived on the reply queue.
//
//	benchdispatch -amqp-url URL -mode latency -rate R -n N [-queue chiffon.work]
//	    placement latency: publish N work requests (as e2e) and take, per
//	    item, the time from just before its publish to the started_at of
//	    its result (the desktop runner's stamp right before it hands the
//	    item to the handler: spawn in exec mode, the request line in
//	    persistent mode), and to the result's arrival. -rate 0 is an idle
//	    cluster: one item at a time, the next published 20 ms after the
//	    previous result; -rate R > 0 publishes R items a second, open
//	    loop, whatever the cluster keeps up with. Prints p50, p99 and max
//	    of both (all clocks are this machine's).
//
//	benchdispatch -mode spawn -n N -handler CMD -concurrency C
//	    the ceiling the work handler sets on this machine: run `sh -c CMD`
//	    N times, C at a time, payload on stdin, as node/worker's runner does,
//	    without Chiffon or the broker.
//	benchdispatch -mode lines -n N -handler CMD -concurrency C
//	    the same for a persistent handler (-work-handler-mode persistent):
//	    start C `sh -c CMD` processes once and send them N request lines
//	    in all, each answered by one result line, as the runner does.
//
// Each prints one line, "MODE N items in SECONDS s = RATE items/s" (latency:
// the percentiles), and exits non-zero if not everything arrived within
// -timeout.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	url := flag.String("amqp-url", "", "RabbitMQ URL")
	mode := flag.String("mode", "raw", "raw | e2e | latency | spawn | lines")
	rate := flag.Float64("rate", 0, "latency: items published per second (0: one at a time on an idle cluster)")
	n := flag.Int("n", 2000, "messages or work items")
	queue := flag.String("queue", "chiffon.work", "e2e: the cluster's work queue")
	window := flag.Int("window", 256, "unconfirmed publishes in flight")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up after this long")
	handler := flag.String("handler", "cat >/dev/null; echo ok", "spawn, lines: the work handler")
	conc := flag.Int("concurrency", 24, "spawn, lines: handlers at once")
	flag.Parse()
	local := *mode == "spawn" || *mode == "lines"
	if (*url == "" && !local) || *n < 1 || *window < 1 || *conc < 1 ||
		(*mode != "raw" && *mode != "e2e" && *mode != "latency" && !local) || *rate < 0 {
		fmt.Fprintln(os.Stderr, "usage: benchdispatch -amqp-url URL -mode raw|e2e [-n N] | -mode latency -rate R [-n N] | -mode spawn|lines [-n N -handler CMD -concurrency C]")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var took time.Duration
	var err error
	switch *mode {
	case "latency":
		line, err := latency(ctx, *url, *queue, *n, *rate)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchdispatch:", err)
			os.Exit(1)
		}
		fmt.Println(line)
		return
	case "spawn":
		took, err = spawn(ctx, *handler, *n, *conc)
	case "lines":
		took, err = lines(ctx, *handler, *n, *conc)
	default:
		took, err = run(ctx, *url, *mode, *queue, *n, *window)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchdispatch:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %d items in %.3f s = %.1f items/s\n", *mode, *n, took.Seconds(), float64(*n)/took.Seconds())
}

func run(ctx context.Context, url, mode, workQueue string, n, window int) (time.Duration, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	pub, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	if err := pub.Confirm(false); err != nil {
		return 0, err
	}
	sub, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	tag := newID()
	// The queue the consumer reads: the raw queue itself, or the replies.
	q, err := sub.QueueDeclare("bench."+mode+"."+tag, true, false, true, false, nil)
	if err != nil {
		return 0, err
	}
	if err := sub.Qos(64, 0, false); err != nil {
		return 0, err
	}
	deliveries, err := sub.Consume(q.Name, "", false, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	bodies := make([][]byte, n)
	target := q.Name
	for i := range bodies {
		if mode == "raw" {
			bodies[i] = fmt.Appendf(nil, `{"seq":%d}`, i)
			continue
		}
		target = workQueue
		bodies[i], _ = json.Marshal(map[string]any{"work_id": fmt.Sprintf("bench-%s-%06d", tag, i),
			"payload": map[string]int{"seq": i}})
	}

	start := time.Now()
	pubErr := make(chan error, 1)
	go func() { pubErr <- publishAll(ctx, pub, target, q.Name, mode == "e2e", bodies, window) }()

	seen := make(map[string]bool, n)
	for len(seen) < n {
		select {
		case err := <-pubErr:
			if err != nil {
				return 0, fmt.Errorf("publish: %w", err)
			}
			pubErr = nil
		case d, ok := <-deliveries:
			if !ok {
				return 0, fmt.Errorf("consumer ended after %d of %d", len(seen), n)
			}
			key := string(d.Body)
			if mode == "e2e" {
				var r struct {
					WorkID string `json:"work_id"`
					Status string `json:"status"`
				}
				if err := json.Unmarshal(d.Body, &r); err != nil || r.WorkID == "" {
					return 0, fmt.Errorf("a reply that is not a result: %q", d.Body)
				}
				if r.Status != "succeeded" {
					return 0, fmt.Errorf("work %s %s: %s", r.WorkID, r.Status, d.Body)
				}
				key = r.WorkID
			}
			seen[key] = true // duplicates (at-least-once results) count once
			if err := d.Ack(false); err != nil {
				return 0, err
			}
		case <-ctx.Done():
			return 0, fmt.Errorf("%d of %d arrived before the timeout", len(seen), n)
		}
	}
	return time.Since(start), nil
}

// publishAll publishes persistent messages with at most window unconfirmed
// at a time and returns once all are confirmed.
func publishAll(ctx context.Context, ch *amqp.Channel, queue, replyTo string, withReply bool, bodies [][]byte, window int) error {
	var inflight []*amqp.DeferredConfirmation
	wait := func(dc *amqp.DeferredConfirmation) error {
		ok, err := dc.WaitContext(ctx)
		if err == nil && !ok {
			err = fmt.Errorf("broker nacked a publish")
		}
		return err
	}
	for _, b := range bodies {
		p := amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: b}
		if withReply {
			p.ReplyTo = replyTo
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, p)
		if err != nil {
			return err
		}
		inflight = append(inflight, dc)
		if len(inflight) >= window {
			if err := wait(inflight[0]); err != nil {
				return err
			}
			inflight = inflight[1:]
		}
	}
	for _, dc := range inflight {
		if err := wait(dc); err != nil {
			return err
		}
	}
	return nil
}

// spawn runs handler n times, conc at a time, as the runner does: sh -c,
// payload on stdin, stdout kept, own process group.
func spawn(ctx context.Context, handler string, n, conc int) (time.Duration, error) {
	start := time.Now()
	sem := make(chan struct{}, conc)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			cmd := exec.CommandContext(ctx, "sh", "-c", handler)
			cmd.Stdin = bytes.NewReader(fmt.Appendf(nil, `{"seq":%d}`, i))
			var out bytes.Buffer
			cmd.Stdout = &out
			cmd.Env = append(os.Environ(), "CHIFFON_WORK_ID=bench", "CHIFFON_WORK_ATTEMPT=1")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Run(); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, fmt.Errorf("handler: %w", err)
	}
	return time.Since(start), nil
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lines starts conc persistent handlers (sh -c handler) and has them answer
// n request lines in all, one at a time each, as the runner does in
// persistent mode; every answer must carry its request's work_id.
func lines(ctx context.Context, handler string, n, conc int) (time.Duration, error) {
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	errs := make(chan error, conc)
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		cmd := exec.CommandContext(ctx, "sh", "-c", handler)
		cmd.Env = append(os.Environ(), "CHIFFON_WORK_PROTOCOL=lines-v1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		in, err := cmd.StdinPipe()
		if err != nil {
			return 0, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return 0, err
		}
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		wg.Go(func() {
			defer func() { _ = in.Close(); _ = cmd.Wait() }()
			r := bufio.NewReader(out)
			for i := range next {
				id := fmt.Sprintf("bench-%06d", i)
				if _, err := fmt.Fprintf(in, `{"work_id":%q,"attempt":1,"gpu_index":-1,"payload":{"seq":%d}}`+"\n", id, i); err != nil {
					errs <- err
					return
				}
				line, err := r.ReadBytes('\n')
				if err != nil {
					errs <- fmt.Errorf("handler: %w", err)
					return
				}
				var res struct {
					WorkID   string `json:"work_id"`
					ExitCode int    `json:"exit_code"`
				}
				if err := json.Unmarshal(line, &res); err != nil || res.WorkID != id || res.ExitCode != 0 {
					errs <- fmt.Errorf("handler answered %q to %s", line, id)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// latency publishes n work requests, one at a time (rate 0) or rate a
// second, and reports the percentiles of publish → started_at and
// publish → result.
func latency(ctx context.Context, url, workQueue string, n int, rate float64) (string, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	pub, err := conn.Channel()
	if err != nil {
		return "", err
	}
	if err := pub.Confirm(false); err != nil {
		return "", err
	}
	confirms := pub.NotifyPublish(make(chan amqp.Confirmation, n+1))
	sub, err := conn.Channel()
	if err != nil {
		return "", err
	}
	tag := newID()
	q, err := sub.QueueDeclare("bench.latency."+tag, true, false, true, false, nil)
	if err != nil {
		return "", err
	}
	deliveries, err := sub.Consume(q.Name, "", true, false, false, false, nil)
	if err != nil {
		return "", err
	}
	type times struct{ published, started, arrived time.Time }
	var (
		mu   sync.Mutex
		seen = make(map[string]*times, n) // guarded by mu
	)
	// The consumer runs apart from the publisher so that open-loop
	// publishing never waits for results.
	done := make(chan error, 1)
	got := make(chan struct{}, n)
	go func() {
		for {
			select {
			case d, ok := <-deliveries:
				if !ok {
					done <- fmt.Errorf("consumer ended")
					return
				}
				now := time.Now()
				var r struct {
					WorkID    string    `json:"work_id"`
					Status    string    `json:"status"`
					StartedAt time.Time `json:"started_at"`
				}
				if err := json.Unmarshal(d.Body, &r); err != nil || r.WorkID == "" {
					done <- fmt.Errorf("a reply that is not a result: %q", d.Body)
					return
				}
				if r.Status != "succeeded" || r.StartedAt.IsZero() {
					done <- fmt.Errorf("work %s %s: %s", r.WorkID, r.Status, d.Body)
					return
				}
				mu.Lock()
				t, ok := seen[r.WorkID]
				first := ok && t.arrived.IsZero()
				if first {
					t.started, t.arrived = r.StartedAt, now
				}
				mu.Unlock()
				if first { // duplicates (at-least-once results) count once
					got <- struct{}{}
				}
			case <-ctx.Done():
				done <- ctx.Err()
				return
			}
		}
	}()
	publish := func(i int) error {
		id := fmt.Sprintf("lat-%s-%06d", tag, i)
		body, _ := json.Marshal(map[string]any{"work_id": id, "payload": map[string]int{"seq": i}})
		mu.Lock()
		seen[id] = &times{published: time.Now()}
		mu.Unlock()
		return pub.PublishWithContext(ctx, "", workQueue, false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, ContentType: "application/json", ReplyTo: q.Name, Body: body})
	}
	start := time.Now()
	var published time.Duration // open loop: how long publishing took
	received := 0
	wait := func(until int) error {
		for received < until {
			select {
			case <-got:
				received++
			case err := <-done:
				return err
			case <-ctx.Done():
				return fmt.Errorf("%d of %d results before the timeout", received, n)
			}
		}
		return nil
	}
	if rate == 0 {
		for i := range n {
			if err := publish(i); err != nil {
				return "", err
			}
			if err := wait(i + 1); err != nil {
				return "", err
			}
			time.Sleep(20 * time.Millisecond) // pacing of the idle case, not a wait for a condition
		}
	} else {
		interval := time.Duration(float64(time.Second) / rate)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := range n {
			if err := publish(i); err != nil {
				return "", err
			}
			select {
			case <-tick.C:
			case err := <-done:
				return "", err
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		published = time.Since(start)
		if err := wait(n); err != nil {
			return "", err
		}
	}
	took := time.Since(start)
	nacks := 0
	for len(confirms) > 0 {
		if c := <-confirms; !c.Ack {
			nacks++
		}
	}
	if nacks > 0 {
		return "", fmt.Errorf("broker nacked %d publishes", nacks)
	}
	var toStart, toResult []time.Duration
	mu.Lock()
	for _, t := range seen {
		toStart = append(toStart, t.started.Sub(t.published))
		toResult = append(toResult, t.arrived.Sub(t.published))
	}
	mu.Unlock()
	pct := func(d []time.Duration) string {
		slices.Sort(d)
		at := func(p float64) float64 {
			return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
		}
		return fmt.Sprintf("p50 %.1f ms p99 %.1f ms max %.1f ms", at(0.50), at(0.99), at(1))
	}
	label := "idle"
	if rate > 0 {
		label = fmt.Sprintf("%.0f/s (published at %.0f/s)", rate, float64(n)/published.Seconds())
	}
	return fmt.Sprintf("latency %s: %d items in %.1f s (%.1f items/s); publish → handler start %s; publish → result %s",
		label, n, took.Seconds(), float64(n)/took.Seconds(), pct(toStart), pct(toResult)), nil
}
