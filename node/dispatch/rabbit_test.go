package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node/dispatch"
)

// These tests run against the package's real RabbitMQ (rabbit: the first
// starts it). Each uses its own queue names.

func rabbitHarness(t *testing.T, prefix, handler string) *harness {
	return newHarness(t, handler, func(c *dispatch.Config) {
		c.AMQPURL = rabbit(t).URL
		c.WorkQueue, c.DeadQueue, c.ResultsQueue = prefix+".work", prefix+".work.dead", prefix+".results"
	})
}

// producer publishes persistent messages with confirms, as a client would.
func producer(t *testing.T) *amqp.Channel {
	t.Helper()
	ch := channel(t)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return ch
}

// channel opens a connection of its own to the test broker (closed when
// the test ends) and a channel on it.
func channel(t *testing.T) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(rabbit(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func publish(t *testing.T, ch *amqp.Channel, queue string, p amqp.Publishing) {
	t.Helper()
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	p.DeliveryMode = amqp.Persistent
	dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", queue, false, false, p)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
		t.Fatalf("publish not confirmed: %v", err)
	}
}

// drain gets messages of queue until n arrived; it fails the test after
// timeout.
func drain(t *testing.T, queue string, n int, timeout time.Duration) []amqp.Delivery {
	t.Helper()
	ch := channel(t)
	var out []amqp.Delivery
	testwait.Every(t, 50*time.Millisecond, timeout, fmt.Sprintf("%d messages on %s", n, queue), func() (bool, string) {
		for len(out) < n {
			d, ok, err := ch.Get(queue, true)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			out = append(out, d)
		}
		return len(out) >= n, fmt.Sprintf("%d messages", len(out))
	})
	return out
}

// drainWorkIDs reads results from queue until each of ids has one or the
// timeout passes (then the test fails, naming the requests without one).
func drainWorkIDs(t *testing.T, queue string, ids []string, timeout time.Duration) {
	t.Helper()
	ch := channel(t)
	got := map[string]int{}
	missing := func() []string {
		var m []string
		for _, id := range ids {
			if got[id] == 0 {
				m = append(m, id)
			}
		}
		return m
	}
	testwait.Every(t, 50*time.Millisecond, timeout, fmt.Sprintf("a result for each of %d requests on %s", len(ids), queue), func() (bool, string) {
		for {
			d, ok, err := ch.Get(queue, true)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			got[decodeResult(t, d.Body).WorkID]++
		}
		m := missing()
		return len(m) == 0, fmt.Sprintf("no result yet for %v", m)
	})
}

func TestRabbit_RequestResultAndDeadLetter(t *testing.T) {
	h := rabbitHarness(t, "t1", `cat`)
	ch := producer(t)
	publish(t, ch, "t1.work", amqp.Publishing{Body: request(t, "r1", consensus.Requirements{MinCPUCores: 1}, `{"hello":"rabbit"}`), CorrelationId: "c1"})
	publish(t, ch, "t1.work", amqp.Publishing{Body: []byte(`{"payload":1}`), MessageId: "producer-7"})
	// Pinned to a node the registry does not know: refused at once.
	publish(t, ch, "t1.work", amqp.Publishing{Body: []byte(`{"work_id":"r2","agent_id":"nobody","payload":1}`), MessageId: "producer-8"})
	h.waitWork("r1", 30*time.Second, published)
	res := drain(t, "t1.results", 1, 10*time.Second)
	if len(res) != 1 || res[0].CorrelationId != "c1" || res[0].DeliveryMode != amqp.Persistent {
		t.Fatalf("results %+v", res)
	}
	if r := decodeResult(t, res[0].Body); r.WorkID != "r1" || r.Output != `{"hello":"rabbit"}` || r.Status != "succeeded" {
		t.Fatalf("result %+v", r)
	}
	dead := drain(t, "t1.work.dead", 2, 10*time.Second)
	// The copies keep what the producer set, so they can be traced back.
	if len(dead) != 2 {
		t.Fatalf("dead letters %+v", dead)
	}
	for _, d := range dead {
		reason, _ := d.Headers[dispatch.HeaderReason].(string)
		switch d.MessageId {
		case "producer-7":
			if reason != "no work_id" {
				t.Errorf("dead letter without work_id: reason %q", reason)
			}
		case "producer-8":
			if !strings.Contains(reason, "no such node") || d.Headers[dispatch.HeaderWorkID] != "r2" {
				t.Errorf("dead letter of the request pinned to an unknown node: %+v", d)
			}
		default:
			t.Errorf("unexpected dead letter %+v", d)
		}
	}
	// Nothing is left unacked or requeued.
	if q, err := ch.QueueDeclarePassive("t1.work", true, false, false, false, nil); err != nil || q.Messages != 0 {
		t.Fatalf("work queue %+v, %v", q, err)
	}
}

func TestRabbit_ReplyToAndDuplicate(t *testing.T) {
	h := rabbitHarness(t, "t2", `cat`)
	ch := producer(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil) // a client's private reply queue
	if err != nil {
		t.Fatal(err)
	}
	body := request(t, "r2", consensus.Requirements{}, `7`)
	publish(t, ch, "t2.work", amqp.Publishing{Body: body, ReplyTo: q.Name, CorrelationId: "c2"})
	h.waitWork("r2", 30*time.Second, published)
	// The same work_id again (a producer retry, or a redelivery): acked,
	// not run again, no second result.
	publish(t, ch, "t2.work", amqp.Publishing{Body: body, ReplyTo: q.Name, CorrelationId: "c2"})
	publish(t, ch, "t2.work", amqp.Publishing{Body: request(t, "r2b", consensus.Requirements{}, `8`)})
	h.waitWork("r2b", 30*time.Second, published)
	d, ok, err := ch.Get(q.Name, true)
	if err != nil || !ok || d.CorrelationId != "c2" || d.MessageId != "r2" || decodeResult(t, d.Body).Output != "7" {
		t.Fatalf("reply %+v %v %v", d, ok, err)
	}
	if _, more, _ := ch.Get(q.Name, true); more {
		t.Fatal("a second reply for a duplicate work_id")
	}
	if runs := h.runs(); !slices.Equal(runs, []string{"r2", "r2b"}) {
		t.Fatalf("runs %v", runs)
	}
}

func TestRabbit_ConflictingQueue(t *testing.T) {
	ch := producer(t)
	if _, err := ch.QueueDeclare("t3.work", false, false, false, false, nil); err != nil { // not durable
		t.Fatal(err)
	}
	conn, err := dispatch.DialAMQP(context.Background(), rabbit(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DeclareQueue("t3.work"); !errors.Is(err, dispatch.ErrQueueConflict) {
		t.Fatalf("DeclareQueue = %v, want ErrQueueConflict", err)
	}
	c2, _ := conn.Channel()
	if err := c2.DeclareQueue("t3.ok"); err != nil {
		t.Fatal(err)
	}
	if err := c2.DeclareQueue("t3.ok"); err != nil { // idempotent
		t.Fatal(err)
	}
}

// TestRabbit_BrokerRestartLosesNothing stops and restarts the broker with
// the script while requests are queued, running and finishing: every
// request gets exactly one run and at least one result.
func TestRabbit_BrokerRestartLosesNothing(t *testing.T) {
	h := rabbitHarness(t, "t4", `sleep 0.3; cat`)
	ch := producer(t)
	const n = 12
	var ids []string
	for i := range n {
		id := fmt.Sprintf("restart-%02d", i)
		ids = append(ids, id)
		publish(t, ch, "t4.work", amqp.Publishing{Body: request(t, id, consensus.Requirements{}, `1`)})
	}
	h.waitWork(ids[0], 30*time.Second, func(w consensus.WorkItem) bool { return w.Status.Active() || w.Status.Terminal() })
	if err := rabbit(t).Stop(); err != nil {
		t.Fatal(err)
	}
	// Work finishes while the broker is down: results wait in the outbox.
	h.waitWork(ids[0], 30*time.Second, func(w consensus.WorkItem) bool { return w.Status.Terminal() })
	if err := rabbit(t).Restart(); err != nil {
		t.Fatal(err)
	}
	ch = producer(t)
	publish(t, ch, "t4.work", amqp.Publishing{Body: request(t, "restart-late", consensus.Requirements{}, `1`)})
	ids = append(ids, "restart-late")
	for _, id := range ids {
		h.waitWork(id, 60*time.Second, published)
	}
	// At least once: a result the broker took before it stopped may come
	// again from the outbox, so a duplicate must not stand in for another
	// request's result. Read until every request has one.
	drainWorkIDs(t, "t4.results", ids, 20*time.Second)
	runs := h.runs()
	slices.Sort(runs)
	if !slices.Equal(runs, ids) {
		t.Fatalf("runs %v, want each of %v once", runs, ids)
	}
}
