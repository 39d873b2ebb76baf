package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/node/dispatch"
	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
)

// The RabbitMQ work bridge under failures, with processes: a real broker,
// three orchestrators (default raft timings, scaled SWIM), three desktops
// whose handler records every work_id it runs. A producer publishes 1,000
// valid requests and five malformed ones while the raft leader is killed
// with SIGKILL twice and the broker is restarted once. The guarantees
// checked are the ones DESIGN.md promises:
//
//   - every valid request runs exactly once (the hard guarantee: requests
//     are acked only after their raft commit, redeliveries are deduplicated
//     by work_id, and a new leader re-POSTs an assignment the desktop
//     already has, which it does not run again);
//   - every valid request gets at least one result, and all of its results
//     agree (results are at least once: a leader that dies between the
//     broker's confirm and MarkWorkPublished, or a confirm lost in a broker
//     restart, makes the next leader publish that result again);
//   - the dead-letter queue holds exactly the malformed requests, each with
//     its reason.

const (
	noLossValid = 1000
	noLossSlots = 4 // -work-concurrency of each desktop
	// noLossDeadline bounds the run once the cluster is up.
	noLossDeadline = 120 * time.Second
)

// noLossRequest is one message the producer publishes.
type noLossRequest struct {
	workID string // "" for the malformed ones
	body   []byte
	// reason is the x-chiffon-reason the malformed one must get (a
	// substring of it).
	reason string
	// amdOnly: the request asks for an AMD GPU, which only one desktop has.
	amdOnly bool
}

// noLossRequests builds the valid requests (a third need a GPU the
// desktops have) and the malformed ones, malformed first.
func noLossRequests(t *testing.T) (bad, good []noLossRequest) {
	t.Helper()
	big := fmt.Sprintf(`{"work_id":"nl-big","payload":"%s"}`, strings.Repeat("x", 300<<10))
	bad = []noLossRequest{
		{body: []byte(`this is not JSON`), reason: "not a JSON object"},
		{body: []byte(`{"payload":{"i":-1}}`), reason: "no work_id"},
		{body: []byte(`{"work_id":"nl-neg","requirements":{"min_cpu_cores":-2}}`), reason: "min_cpu_cores must be a number >= 0"},
		{body: []byte(`{"work_id":"nl-quantum","requirements":{"gpu_type":"quantum"}}`), reason: `gpu_type "quantum"`},
		{body: []byte(big), reason: "exceeds the 262144-byte limit"},
	}
	for i := range noLossValid {
		r := noLossRequest{workID: fmt.Sprintf("nl-%04d", i)}
		req := map[string]any{"work_id": r.workID, "payload": map[string]int{"i": i}}
		switch i % 6 {
		case 1:
			req["requirements"] = map[string]any{"gpu_type": "nvidia", "min_gpu_vram_gb": 4}
		case 3:
			req["requirements"] = map[string]any{"min_gpu_vram_gb": 2, "min_cpu_cores": 1}
		case 5:
			req["requirements"] = map[string]any{"gpu_type": "amd", "min_gpu_vram_gb": 1}
			r.amdOnly = true
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		r.body = b
		good = append(good, r)
	}
	return bad, good
}

// dialBroker connects to url, retrying while the broker is down, until ctx
// ends.
func dialBroker(ctx context.Context, url string) (*amqp.Connection, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := amqp.DialConfig(url, amqp.Config{Heartbeat: 5 * time.Second, Dial: amqp.DefaultDial(2 * time.Second)})
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial broker: %w (last error: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// noLossProducer publishes persistent requests with publisher confirms,
// surviving a broker restart: a message is published again only when its
// confirm never came (a duplicate request, deduplicated by work_id).
type noLossProducer struct {
	url string
	// queue is the work queue ("" is the default, chiffon.work).
	queue string
	conn  *amqp.Connection
	ch    *amqp.Channel
	// republished counts messages sent again after a lost confirm.
	republished int
}

func (p *noLossProducer) queueName() string {
	if p.queue == "" {
		return "chiffon.work"
	}
	return p.queue
}

func (p *noLossProducer) connect(ctx context.Context) error {
	if p.conn != nil {
		_ = p.conn.Close()
	}
	c, err := dialBroker(ctx, p.url)
	if err != nil {
		return err
	}
	ch, err := c.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err == nil {
		_, err = ch.QueueDeclare(p.queueName(), true, false, false, false, nil)
	}
	if err != nil {
		_ = c.Close()
		return err
	}
	p.conn, p.ch = c, ch
	return nil
}

// publish sends batch and returns once every message of it is confirmed,
// reconnecting as often as needed until ctx ends.
func (p *noLossProducer) publish(ctx context.Context, batch []noLossRequest) error {
	todo := batch
	for len(todo) > 0 {
		if p.ch == nil || p.ch.IsClosed() {
			if err := p.connect(ctx); err != nil {
				return err
			}
		}
		var dcs []*amqp.DeferredConfirmation
		for _, r := range todo {
			dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, "", p.queueName(), false, false,
				amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: r.body})
			if err != nil {
				break // the channel is gone: the rest go again on a new one
			}
			dcs = append(dcs, dc)
		}
		var again []noLossRequest
		for i, r := range todo {
			if i >= len(dcs) {
				again = append(again, r) // never sent
				continue
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			ok, err := dcs[i].WaitContext(wctx)
			cancel()
			if err != nil || !ok {
				again = append(again, r)
				p.republished++
			}
		}
		if len(again) > 0 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			_ = p.ch.Close() // reconnect before the next try
		}
		todo = again
	}
	return nil
}

func (p *noLossProducer) close() {
	if p.conn != nil {
		_ = p.conn.Close()
	}
}

// noLossResults consumes chiffon.results until stopped, surviving a broker
// restart, and records every result by work_id.
type noLossResults struct {
	mu sync.Mutex
	// All below guarded by mu.
	byID map[string][]apitype.WorkResult
	// dups counts results for a work_id seen before that the broker did not
	// flag as redelivered: Chiffon published them again. redelivered counts
	// repeats the broker flagged (our own ack lost in the broker restart).
	dups, redelivered int
	// dupAt is when each of the dups arrived.
	dupAt []time.Time
	bad   []string
}

func (r *noLossResults) run(ctx context.Context, url string) {
	for ctx.Err() == nil {
		conn, err := dialBroker(ctx, url)
		if err != nil {
			return
		}
		r.consume(ctx, conn)
		_ = conn.Close()
	}
}

func (r *noLossResults) consume(ctx context.Context, conn *amqp.Connection) {
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	if _, err := ch.QueueDeclare("chiffon.results", true, false, false, false, nil); err != nil {
		return
	}
	if err := ch.Qos(256, 0, false); err != nil {
		return
	}
	deliveries, err := ch.Consume("chiffon.results", "", false, false, false, false, nil)
	if err != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			var res apitype.WorkResult
			r.mu.Lock()
			if err := json.Unmarshal(d.Body, &res); err != nil || res.WorkID == "" || d.MessageId != res.WorkID {
				// A consumer drops a republished copy by message_id.
				r.bad = append(r.bad, fmt.Sprintf("message_id %q: %s", d.MessageId, d.Body))
			} else {
				if len(r.byID[res.WorkID]) > 0 {
					if d.Redelivered {
						r.redelivered++
					} else {
						r.dups++
						r.dupAt = append(r.dupAt, time.Now())
					}
				}
				r.byID[res.WorkID] = append(r.byID[res.WorkID], res)
			}
			r.mu.Unlock()
			_ = d.Ack(false)
		}
	}
}

func (r *noLossResults) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// ranLog reads the work_ids the desktops' handlers wrote, with the
// desktops that ran each.
func ranLog(paths map[string]string) (map[string][]string, error) {
	out := map[string][]string{}
	for desk, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if id := strings.TrimSpace(sc.Text()); id != "" {
				out[id] = append(out[id], desk)
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TestProcess_NoLossUnderFailures is the no-loss test described at the top
// of this file: 1,000 valid and 5 malformed requests through a real broker
// and cluster, two leader kills and a broker restart while they flow.
func TestProcess_NoLossUnderFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("process test with a real broker")
	}
	start := time.Now()
	broker := dispatchtest.StartForTest(t)
	t.Logf("broker up after %s", time.Since(start).Round(time.Millisecond))

	// Three orchestrators with the bridge, default raft timings.
	orchs, procs := startOrchs(t, "nl-orch", "127.0.1", "-amqp-url", broker.URL)
	// Three desktops: two NVIDIA (one with two GPUs), one AMD.
	ranDir := t.TempDir()
	ranPaths := map[string]string{}
	desks := []struct {
		name string
		m    []byte
	}{
		{"nl-desk-nv", metricsJSON(t, 1, 16, 32, "nvidia", gpuJSON{0, "NVIDIA GeForce RTX 4090", 24, 20, 5})},
		{"nl-desk-amd", metricsJSON(t, 1, 16, 32, "amd", gpuJSON{0, "AMD Radeon RX 7900 XTX", 24, 22, 0})},
		{"nl-desk-2nv", metricsJSON(t, 2, 32, 64, "nvidia", gpuJSON{0, "NVIDIA RTX A5000", 24, 23, 0},
			gpuJSON{1, "NVIDIA RTX A5000", 24, 12, 40})},
	}
	for i, d := range desks {
		ip := fmt.Sprintf("127.0.1.%d", i+4)
		s := newNodeSpec(t, d.name, ip).withMetrics(t, d.m)
		ranPaths[d.name] = filepath.Join(ranDir, d.name+".log")
		handler := fmt.Sprintf(`cat >/dev/null; echo "$CHIFFON_WORK_ID" >> '%s'; echo ok`, ranPaths[d.name])
		mode := "exec"
		if d.name == "nl-desk-2nv" {
			// One desktop runs a persistent handler: a shell loop that
			// logs and answers each request line (its output, "ok\n", is
			// the same as the exec handlers').
			mode = "persistent"
			handler = fmt.Sprintf(`while IFS= read -r l; do i=${l#*'"work_id":"'}; i=${i%%%%'"'*}; `+
				`echo "$i" >> '%s'; printf '{"work_id":"%%s","exit_code":0,"output":"ok\\n"}\n' "$i"; done`, ranPaths[d.name])
		}
		s.args = append([]string{"-retry-join", orchs[0].gossipAddr, "-retry-interval", "200ms",
			"-work-handler", handler, "-work-handler-mode", mode, "-work-addr", fmt.Sprintf("%s:%d", ip, freeTCPPort(t, ip)),
			"-work-concurrency", fmt.Sprint(noLossSlots)}, fastTimings...)
		procs[s.name] = s.start(t)
	}

	// leader returns the orchestrator all live ones name as the leader.
	leader := func(exclude *orchSpec) (*orchSpec, string) { return agreedLeader(orchs, exclude) }
	var lead *orchSpec
	waitFor(t, 30*time.Second, "a leader known to all orchestrators", func() (bool, string) {
		var seen string
		lead, seen = leader(nil)
		return lead != nil, seen
	})
	waitFor(t, 30*time.Second, "the three desktops online in the leader's registry", func() (bool, string) {
		a, err := agentsOn(lead.httpAddr)
		n := 0
		for _, d := range desks {
			if a[d.name].Status == "online" {
				n++
			}
		}
		return err == nil && n == 3, fmt.Sprint(a, err)
	})
	t.Logf("cluster up after %s; leader %s", time.Since(start).Round(time.Millisecond), lead.name)

	runStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), noLossDeadline)
	defer cancel()
	results := &noLossResults{byID: map[string][]apitype.WorkResult{}}
	var bg sync.WaitGroup
	rctx, stopResults := context.WithCancel(ctx)
	bg.Go(func() { results.run(rctx, broker.URL) })
	prod := &noLossProducer{url: broker.URL}
	defer func() {
		cancel() // ends the producer and the consumer, also on t.Fatal
		bg.Wait()
		prod.close()
	}()

	// The producer: the malformed requests first (so that no leader dies
	// while it handles them: a dead-letter copy confirmed just before a
	// leader dies is, by design, dead-lettered again by the next one),
	// then the valid ones in batches, paced by the work that has run.
	bad, good := noLossRequests(t)
	if err := prod.publish(ctx, bad); err != nil {
		t.Fatalf("publish the malformed requests: %v", err)
	}
	ranCount := func() int {
		ran, err := ranLog(ranPaths)
		if err != nil {
			return -1
		}
		return len(ran)
	}
	// The producer publishes at most allowed requests, and keeps at most
	// noLossAhead published and not yet run, so that work is still
	// arriving at every failure however fast the machine is. Before the
	// broker restart it may publish half: the second kill, after the
	// restart, then finds half the work still to come.
	var allowed atomic.Int64
	allowed.Store(int64(len(good) / 2))
	const noLossAhead = 150
	pubDone := make(chan error, 1)
	bg.Go(func() {
		tick := time.NewTicker(pollEvery)
		defer tick.Stop()
		for i := 0; i < len(good); i += 25 {
			for ranCount() < i-noLossAhead || int64(i+25) > allowed.Load() {
				select {
				case <-ctx.Done():
					pubDone <- fmt.Errorf("after %d of %d: %w", i, len(good), ctx.Err())
					return
				case <-tick.C:
				}
			}
			if err := prod.publish(ctx, good[i:min(i+25, len(good))]); err != nil {
				pubDone <- fmt.Errorf("after %d of %d: %w", i, len(good), err)
				return
			}
		}
		pubDone <- nil
	})

	waitRan := func(n int) {
		t.Helper()
		waitFor(t, time.Until(runStart.Add(noLossDeadline)), fmt.Sprintf("%d work items run", n), func() (bool, string) {
			c := ranCount()
			return c >= n, fmt.Sprintf("%d run, %d results", c, results.distinct())
		})
	}
	// killLeader SIGKILLs the leader, waits for the survivors to elect a
	// new one, restarts the killed one from its data dir and waits until
	// it follows the new leader.
	var failures []time.Time // when each failure began
	killLeader := func(round int) {
		t.Helper()
		old, _ := leader(nil)
		if old == nil {
			t.Fatalf("kill %d: no agreed leader", round)
		}
		at := ranCount()
		failures = append(failures, time.Now())
		procs[old.name].kill()
		<-procs[old.name].done
		killed := time.Now()
		var nl *orchSpec
		waitFor(t, 20*time.Second, "a new leader after killing "+old.name, func() (bool, string) {
			var seen string
			nl, seen = leader(old)
			return nl != nil && nl != old, seen
		})
		t.Logf("kill %d: SIGKILLed leader %s with %d items run; new leader %s after %s", round, old.name, at, nl.name,
			time.Since(killed).Round(time.Millisecond))
		procs[old.name] = old.start(t)
		waitFor(t, 30*time.Second, old.name+" back, following "+nl.name, func() (bool, string) {
			l := leaderOf(old.httpAddr)
			return l == nl.httpAddr, l
		})
	}

	// The failures, each while work flows: a leader kill, a broker
	// restart (the producer stalls meanwhile, what raft holds keeps
	// running), and another leader kill once the producer is going again.
	waitRan(100)
	killLeader(1)
	waitRan(250)
	at, stopping := ranCount(), time.Now()
	failures = append(failures, stopping)
	if err := broker.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := broker.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker restarted: stop called with %d items run, took %s; start took %s; %d run now", at,
		stopped.Sub(stopping).Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond), ranCount())
	allowed.Store(int64(len(good)))
	waitRan(ranCount() + 100)
	killLeader(2)

	if err := <-pubDone; err != nil {
		t.Fatalf("producer: %v", err)
	}
	t.Logf("all %d valid requests published (%d republished after a lost confirm) after %s",
		len(good), prod.republished, time.Since(start).Round(time.Millisecond))

	// Wait for a result of every valid request.
	waitFor(t, time.Until(runStart.Add(noLossDeadline)), "a result for every valid request", func() (bool, string) {
		n := results.distinct()
		return n >= len(good), fmt.Sprintf("%d results, %d run", n, ranCount())
	})
	// Then for the registry to say every result is published (confirmed),
	// so that no republish is still on its way, and let the consumer take
	// what is in the queue.
	l, _ := leader(nil)
	if l == nil {
		t.Fatal("no agreed leader at the end")
	}
	waitFor(t, 30*time.Second, "every result marked published", func() (bool, string) {
		var list apitype.WorkList
		if code, err := getJSON("https://"+l.httpAddr+"/v1/work", &list); err != nil || code != 200 {
			return false, fmt.Sprintf("GET /v1/work: %d %v", code, err)
		}
		unpublished := 0
		for _, w := range list.Work {
			if !w.Published {
				unpublished++
			}
		}
		return list.Count == len(good) && unpublished == 0, fmt.Sprintf("%d items, %d unpublished", list.Count, unpublished)
	})
	waitFor(t, 10*time.Second, "the results queue drained", func() (bool, string) {
		conn, err := amqp.Dial(broker.URL)
		if err != nil {
			return false, err.Error()
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return false, err.Error()
		}
		q, err := ch.QueueDeclarePassive("chiffon.results", true, false, false, false, nil)
		if err != nil {
			return false, err.Error()
		}
		return q.Messages == 0, fmt.Sprintf("%d ready", q.Messages)
	})
	stopResults()

	// 1. Every valid request ran exactly once, on a desktop that fits it.
	ran, err := ranLog(ranPaths)
	if err != nil {
		t.Fatal(err)
	}
	valid := map[string]noLossRequest{}
	for _, r := range good {
		valid[r.workID] = r
	}
	var twice, never, unknown, misplaced []string
	for _, r := range good {
		switch on := ran[r.workID]; {
		case len(on) == 0:
			never = append(never, r.workID)
		case len(on) > 1:
			twice = append(twice, fmt.Sprintf("%s on %v", r.workID, on))
		case r.amdOnly && on[0] != "nl-desk-amd":
			misplaced = append(misplaced, fmt.Sprintf("%s (amd) on %s", r.workID, on[0]))
		}
	}
	for id := range ran {
		if _, ok := valid[id]; !ok {
			unknown = append(unknown, id)
		}
	}
	for what, ids := range map[string][]string{"ran more than once": twice, "never ran": never,
		"ran but were never valid requests": unknown, "ran on a desktop without the GPU they asked for": misplaced} {
		if len(ids) > 0 {
			sort.Strings(ids)
			t.Errorf("%d work items %s: %v", len(ids), what, ids[:min(len(ids), 20)])
		}
	}
	// Every desktop took work: the exec and the persistent handlers alike.
	perDesk := map[string]int{}
	for _, on := range ran {
		for _, d := range on {
			perDesk[d]++
		}
	}
	t.Logf("items run per desktop: %v", perDesk)
	for _, d := range desks {
		if perDesk[d.name] == 0 {
			t.Errorf("desktop %s ran no work", d.name)
		}
	}

	// 2. At least one result each, all of them succeeded and agreeing.
	results.mu.Lock()
	var missing, disagree []string
	total := 0
	for _, r := range good {
		rs := results.byID[r.workID]
		total += len(rs)
		if len(rs) == 0 {
			missing = append(missing, r.workID)
			continue
		}
		for _, x := range rs {
			if x.Status != "succeeded" || x.ExitCode != 0 || x.Output != "ok\n" || x.AgentID != rs[0].AgentID ||
				x.Attempts != rs[0].Attempts {
				disagree = append(disagree, fmt.Sprintf("%s: %+v vs %+v", r.workID, x, rs[0]))
				break
			}
		}
	}
	for id := range results.byID {
		if _, ok := valid[id]; !ok {
			t.Errorf("a result for %s, which was not a valid request: %+v", id, results.byID[id])
		}
	}
	dups, redelivered, badResults := results.dups, results.redelivered, results.bad
	// Which failure each duplicate followed (kill 1, broker restart, kill 2).
	perFailure := make([]int, len(failures))
	early := 0
	for _, at := range results.dupAt {
		i := len(failures) - 1
		for i >= 0 && at.Before(failures[i]) {
			i--
		}
		if i < 0 {
			early++
		} else {
			perFailure[i]++
		}
	}
	results.mu.Unlock()
	if len(missing) > 0 {
		t.Errorf("%d valid requests got no result: %v", len(missing), missing[:min(len(missing), 20)])
	}
	if len(disagree) > 0 {
		t.Errorf("%d work items got a failed or conflicting result: %v", len(disagree), disagree[:min(len(disagree), 5)])
	}
	if len(badResults) > 0 {
		t.Errorf("%d result messages are not results or lack message_id = work_id: %q", len(badResults), badResults[:min(len(badResults), 3)])
	}
	t.Logf("%d results for %d work items: %d published twice by Chiffon (after kill 1, the broker restart, kill 2: %v; before any failure: %d), "+
		"%d redelivered to this consumer by the broker", total, len(good), dups, perFailure, early, redelivered)
	// Duplicates come only from the outbox's window: results the broker
	// had taken but whose MarkWorkPublished had not committed when a
	// leader died, or whose confirms the broker restart swallowed. By
	// design each failure republishes at most the one outbox batch in
	// flight at that instant (dispatch.OutboxBatch results): the results
	// that finished within about a confirm and a raft round trip. How many
	// that is depends on the machine's speed: 0 to 11 in all over the
	// three failures on an idle 2-core VM, 20 after one kill with a core
	// taken by a busy loop. A result republished without a failure, or a
	// new leader republishing results it had already marked, would show as
	// early duplicates or as more than a batch after one failure.
	if early > 0 {
		t.Errorf("%d results were published twice before any failure", early)
	}
	for i, n := range perFailure {
		if n > dispatch.OutboxBatch {
			t.Errorf("%d duplicate results after failure %d (%v by failure); want at most one outbox batch (%d): only the results in flight at a leader kill or the broker restart may be published twice",
				n, i+1, perFailure, dispatch.OutboxBatch)
		}
	}
	// 3. The dead-letter queue holds exactly the malformed requests.
	conn, err := amqp.Dial(broker.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for {
		d, ok, err := ch.Get("chiffon.work.dead", true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		reason, _ := d.Headers[dispatch.HeaderReason].(string)
		reasons = append(reasons, reason)
	}
	slices.Sort(reasons)
	var unmatched []string
	left := slices.Clone(reasons)
	for _, b := range bad {
		i := slices.IndexFunc(left, func(r string) bool { return strings.Contains(r, b.reason) })
		if i < 0 {
			unmatched = append(unmatched, b.reason)
			continue
		}
		left = slices.Delete(left, i, i+1)
	}
	if len(reasons) != len(bad) || len(unmatched) > 0 {
		t.Errorf("dead-letter queue holds %d messages with reasons %q; want exactly the %d malformed requests (missing %q, extra %q)",
			len(reasons), reasons, len(bad), unmatched, left)
	}
	t.Logf("done in %s", time.Since(start).Round(time.Millisecond))
}
