package dispatch_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/node/dispatch"
	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
)

func fakeHarness(t *testing.T, handler string, f func(*dispatch.Config)) (*harness, *dispatchtest.FakeBroker) {
	fb := dispatchtest.NewFakeBroker()
	h := newHarness(t, handler, func(c *dispatch.Config) {
		c.AMQPURL, c.Dial = "amqp://fake/", fb.Dial
		if f != nil {
			f(c)
		}
	})
	return h, fb
}

func TestBridge_RequestToResult(t *testing.T) {
	h, fb := fakeHarness(t, `cat`, nil)
	fb.Declare("replies")
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "w1", consensus.Requirements{MinGPUVRAMGB: 8, MinCPUCores: 2}, `{"n":1}`),
		ReplyTo: "replies", CorrelationID: "corr-1"})
	w := h.waitWork("w1", 20*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.AgentID != "desk-1" || w.GPUIndex != 0 || w.Attempts != 1 {
		t.Fatalf("work %+v", w)
	}
	ms := fb.WaitMessages("replies", 1, 5*time.Second)
	if len(ms) != 1 || ms[0].CorrelationID != "corr-1" || ms[0].MessageID != "w1" {
		t.Fatalf("replies %+v", ms)
	}
	r := decodeResult(t, ms[0].Body)
	if r.WorkID != "w1" || r.Status != "succeeded" || r.Output != `{"n":1}` || r.AgentID != "desk-1" || r.StartedAt.IsZero() {
		t.Fatalf("result %+v", r)
	}
	if got := fb.Messages("chiffon.results"); len(got) != 0 {
		t.Fatalf("results queue got %d messages; the reply went to reply_to", len(got))
	}
	if len(fb.Messages("chiffon.work")) != 0 {
		t.Fatal("request not acked")
	}
}

func TestBridge_DeadLettersBadRequests(t *testing.T) {
	_, fb := fakeHarness(t, `cat`, func(c *dispatch.Config) { c.MaxRequestBytes = 200 })
	bodies := map[string]string{
		"not json":             `hello`,
		"no work_id":           `{"payload":1}`,
		"negative":             `{"work_id":"a","requirements":{"min_cpu_cores":-1}}`,
		"unknown requirement":  `{"work_id":"b","requirements":{"min_ram_gb":4}}`,
		"too big":              `{"work_id":"c","payload":"` + strings.Repeat("x", 300) + `"}`,
		"payload not json":     `{"work_id":"d","payload":nope}`,
		"work_id control char": "{\"work_id\":\"e\\u0007\"}",
	}
	for _, b := range bodies {
		fb.Publish("chiffon.work", dispatch.Message{Body: []byte(b)})
	}
	dead := fb.WaitMessages("chiffon.work.dead", len(bodies), 10*time.Second)
	if len(dead) != len(bodies) {
		t.Fatalf("%d dead-lettered, want %d", len(dead), len(bodies))
	}
	for _, m := range dead {
		if r, _ := m.Headers[dispatch.HeaderReason].(string); r == "" {
			t.Errorf("dead letter %q without a reason", m.Body)
		}
	}
	if n := len(fb.Messages("chiffon.work")); n != 0 {
		t.Fatalf("%d bad requests left in the work queue: they must not loop", n)
	}
}

func TestBridge_DuplicateWorkIDRunsOnce(t *testing.T) {
	h, fb := fakeHarness(t, `cat`, nil)
	for range 3 {
		fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "dup", consensus.Requirements{}, `1`)})
	}
	h.waitWork("dup", 20*time.Second, published)
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "dup", consensus.Requirements{}, `1`)})
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "after", consensus.Requirements{}, `1`)})
	h.waitWork("after", 20*time.Second, published)
	if runs := h.runs(); !slices.Equal(runs, []string{"dup", "after"}) {
		t.Fatalf("handler ran %v, want dup once then after", runs)
	}
	if n := len(fb.Messages("chiffon.results")); n != 2 {
		t.Fatalf("%d results, want 2", n)
	}
}

func TestBridge_NoCapacityFailsAndDeadLetters(t *testing.T) {
	h, fb := fakeHarness(t, `cat`, func(c *dispatch.Config) { c.PendingTimeout = 300 * time.Millisecond })
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "huge", consensus.Requirements{MinGPUVRAMGB: 80}, `1`), CorrelationID: "c"})
	// Work with an AMQP expiration (which sets its deadline instead of
	// -work-pending-timeout; TestBridge_ExpirationDeadline checks the value)
	// that fits runs: an ample one, as placement on a busy machine may take
	// longer than 100 ms.
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "pinned", consensus.Requirements{}, `1`), Expiration: "60000"})
	w := h.waitWork("huge", 10*time.Second, published)
	if w.Status != consensus.WorkFailed || !strings.HasPrefix(w.Error, dispatch.ReasonNoCapacity) {
		t.Fatalf("work %+v", w)
	}
	res := fb.WaitMessages("chiffon.results", 2, 5*time.Second)
	i := slices.IndexFunc(res, func(m dispatch.Message) bool { return decodeResult(t, m.Body).WorkID == "huge" })
	if i < 0 || decodeResult(t, res[i].Body).Status != "failed" || res[i].CorrelationID != "c" {
		t.Fatalf("results %+v", res)
	}
	dead := fb.WaitMessages("chiffon.work.dead", 1, 5*time.Second)
	if len(dead) != 1 || dead[0].Headers[dispatch.HeaderWorkID] != "huge" ||
		!strings.HasPrefix(dead[0].Headers[dispatch.HeaderReason].(string), "no capacity") {
		t.Fatalf("dead letters %+v", dead)
	}
	if runs := h.runs(); len(runs) != 1 || runs[0] != "pinned" {
		t.Fatalf("runs %v", runs)
	}
}

func TestBridge_ExpirationDeadline(t *testing.T) {
	h, fb := fakeHarness(t, `cat`, nil)
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "short", consensus.Requirements{MinGPUVRAMGB: 80}, `1`), Expiration: "200"})
	w := h.waitWork("short", 10*time.Second, func(w consensus.WorkItem) bool { return w.Status.Terminal() })
	if !strings.HasPrefix(w.Error, dispatch.ReasonNoCapacity) || w.Deadline.Sub(w.SubmittedAt) != 200*time.Millisecond {
		t.Fatalf("work %+v", w)
	}
}

func TestBridge_BrokerOutageLosesNothing(t *testing.T) {
	h, fb := fakeHarness(t, `cat`, nil)
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "before", consensus.Requirements{}, `1`)})
	h.waitWork("before", 20*time.Second, published)
	fb.SetDown(true)
	for _, id := range []string{"during-1", "during-2"} {
		fb.Publish("chiffon.work", dispatch.Message{Body: request(t, id, consensus.Requirements{}, `1`)})
	}
	dials := fb.Dials()
	testwait.Until(t, 10*time.Second, "reconnection attempts, with backoff", // it keeps trying
		testwait.Bool(func() bool { return fb.Dials() >= dials+2 }))
	fb.SetDown(false)
	for _, id := range []string{"during-1", "during-2"} {
		h.waitWork(id, 30*time.Second, published)
	}
	if n := len(fb.Messages("chiffon.results")); n != 3 {
		t.Fatalf("%d results, want 3", n)
	}
}

func TestBridge_PendingLimitStopsConsuming(t *testing.T) {
	release := t.TempDir() + "/go"
	h, fb := fakeHarness(t, `while [ ! -f `+release+` ]; do sleep 0.02; done; cat`, func(c *dispatch.Config) { c.MaxPending = 1 })
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "first", consensus.Requirements{}, `1`)})
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "second", consensus.Requirements{}, `2`)})
	h.waitWork("first", 10*time.Second, func(w consensus.WorkItem) bool { return w.Status == consensus.WorkRunning })
	// The second stays unrecorded (and unacked) while the first is active.
	if _, ok := h.store.FSM().GetWork("second"); ok {
		t.Fatal("second recorded while the pending limit was reached")
	}
	if err := writeFile(release); err != nil {
		t.Fatal(err)
	}
	h.waitWork("second", 20*time.Second, published)
}

func TestBridge_RequeuesWorkOfOfflineNode(t *testing.T) {
	const lease = 500 * time.Millisecond
	h, fb := fakeHarness(t, `cat`, func(c *dispatch.Config) { c.Lease = lease })
	// A second desktop that never answers: work placed there is stuck
	// until the node goes offline.
	h.addDesktop("a-dead-desk", "127.0.0.1:1", consensus.StatusOnline)
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "w", consensus.Requirements{}, `1`)})
	// CPU-only work: equal nodes, so the smallest agent id gets it.
	first := h.waitWork("w", 10*time.Second, func(w consensus.WorkItem) bool { return w.AgentID == "a-dead-desk" })
	if got := first.LeaseExpiresAt.Sub(first.AssignedAt); got != lease {
		t.Fatalf("attempt 1's lease is %s after its assignment, want %s", got, lease)
	}
	h.addDesktop("a-dead-desk", "127.0.0.1:1", consensus.StatusOffline)
	w := h.waitWork("w", 20*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.AgentID != "desk-1" || w.Attempts != 2 {
		t.Fatalf("work %+v", w)
	}
	// Attempt 1 never started anywhere the leader knows of: it is placed
	// again only once its lease is over plus one lease for clock skew.
	if gap := w.AssignedAt.Sub(first.AssignedAt); gap < 2*lease {
		t.Fatalf("attempt 2 assigned %s after attempt 1, before its fence cleared (%s)", gap, 2*lease)
	}
}

func TestBridge_NewLeaderResumes(t *testing.T) {
	release := t.TempDir() + "/go"
	h, fb := fakeHarness(t, `while [ ! -f `+release+` ]; do sleep 0.02; done; cat`, nil)
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "w", consensus.Requirements{}, `1`)})
	h.waitWork("w", 10*time.Second, func(w consensus.WorkItem) bool { return w.Status == consensus.WorkRunning })
	h.stop() // leadership lost while the work runs
	if err := writeFile(release); err != nil {
		t.Fatal(err)
	}
	h.start() // a new term: the tracker re-attaches to the running work
	w := h.waitWork("w", 20*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.Attempts != 1 {
		t.Fatalf("work %+v", w)
	}
	if runs := h.runs(); len(runs) != 1 {
		t.Fatalf("ran %v, want once", runs)
	}
}

func TestBridge_QueueConflictIsAnError(t *testing.T) {
	fb := dispatchtest.NewFakeBroker()
	fb.DeclareConflicting("chiffon.results")
	h := newHarness(t, `cat`, func(c *dispatch.Config) { c.AMQPURL, c.Dial = "amqp://fake/", fb.Dial })
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "w", consensus.Requirements{}, `1`)})
	// The bridge gave up on the first connection and dialled again.
	testwait.Until(t, 10*time.Second, "a second dial after the conflict", testwait.Bool(func() bool { return fb.Dials() >= 2 }))
	if _, ok := h.store.FSM().GetWork("w"); ok {
		t.Fatal("consumed although the queues could not be declared")
	}
}

// TestBridge_RefusesPinToNodeThatCannotRunWork: a request pinned with
// agent_id to a node that is unknown, not a desktop, or a desktop without
// a work handler is dead-lettered at once with the reason (it would
// otherwise wait for -work-pending-timeout and then fail). A pin to a
// desktop with a handler that is offline now is accepted and waits for
// it; a pin to an online desktop runs there.
func TestBridge_RefusesPinToNodeThatCannotRunWork(t *testing.T) {
	h, fb := fakeHarness(t, `cat`, nil) // the default 10 min pending timeout
	recs := []consensus.Record{
		{AgentID: "orch-1", Name: "orch-1", Roles: []string{"orchestrator"}, Status: consensus.StatusOnline},
		{AgentID: "desk-idle", Name: "desk-idle", Roles: []string{"desktop"}, Status: consensus.StatusOnline},
		{AgentID: "desk-away", Name: "desk-away", Roles: []string{"desktop"}, Status: consensus.StatusOffline,
			WorkSlots: 1, WorkAddr: "127.0.0.1:1"},
	}
	if _, err := h.store.Apply(consensus.UpsertNodes{At: time.Now(), Nodes: recs}, time.Second); err != nil {
		t.Fatal(err)
	}
	pinned := func(workID, agentID string) []byte {
		b, err := json.Marshal(apitype.WorkRequest{WorkID: workID, AgentID: agentID, Payload: json.RawMessage(`1`)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	refused := map[string]string{ // work_id: what the reason must say
		"to-unknown":   "no such node",
		"to-orch":      "not a desktop",
		"to-nohandler": "no work handler",
	}
	fb.Publish("chiffon.work", dispatch.Message{Body: pinned("to-unknown", "nobody")})
	fb.Publish("chiffon.work", dispatch.Message{Body: pinned("to-orch", "orch-1")})
	fb.Publish("chiffon.work", dispatch.Message{Body: pinned("to-nohandler", "desk-idle")})
	fb.Publish("chiffon.work", dispatch.Message{Body: pinned("to-away", "desk-away")})
	fb.Publish("chiffon.work", dispatch.Message{Body: pinned("to-desk", "desk-1")})

	// Far sooner than the pending timeout: the dead letters are there.
	dead := fb.WaitMessages("chiffon.work.dead", len(refused), 10*time.Second)
	if len(dead) != len(refused) {
		t.Fatalf("%d dead-lettered, want %d", len(dead), len(refused))
	}
	for _, m := range dead {
		id, _ := m.Headers[dispatch.HeaderWorkID].(string)
		reason, _ := m.Headers[dispatch.HeaderReason].(string)
		want, ok := refused[id]
		if !ok || !strings.Contains(reason, want) {
			t.Errorf("dead letter for %q with reason %q; want one of %v", id, reason, refused)
		}
		delete(refused, id)
	}
	w := h.waitWork("to-desk", 20*time.Second, published)
	if w.Status != consensus.WorkSucceeded || w.AgentID != "desk-1" {
		t.Fatalf("work pinned to desk-1: %+v", w)
	}
	fsm := h.store.FSM()
	for _, id := range []string{"to-unknown", "to-orch", "to-nohandler"} {
		if w, found := fsm.GetWork(id); found {
			t.Errorf("refused request %s was recorded: %+v", id, w)
		}
	}
	if w, found := fsm.GetWork("to-away"); !found || w.Status != consensus.WorkPending {
		t.Errorf("work pinned to the offline desktop: %+v (found %v), want pending", w, found)
	}
	if n := len(fb.Messages("chiffon.work")); n != 0 {
		t.Fatalf("%d requests left in the work queue", n)
	}
}
