package dispatch_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/node/dispatch"
)

// TestBridge_SchemaVersionHeader: results carry x-chiffon-schema 1; a
// request of a newer schema is dead-lettered (not misread), with a reason
// that names the header, and requests of version 1, with or without the
// header, run.
func TestBridge_SchemaVersionHeader(t *testing.T) {
	h, fb := fakeHarness(t, `cat`, nil)
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "future", consensus.Requirements{}, `1`),
		Headers: map[string]any{apitype.AMQPSchemaHeader: int32(2)}})
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "v1", consensus.Requirements{}, `1`),
		Headers: map[string]any{apitype.AMQPSchemaHeader: "1"}})
	fb.Publish("chiffon.work", dispatch.Message{Body: request(t, "plain", consensus.Requirements{}, `1`)})
	h.waitWork("v1", 20*time.Second, published)
	h.waitWork("plain", 20*time.Second, published)
	dead := fb.WaitMessages("chiffon.work.dead", 1, 5*time.Second)
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	reason, _ := dead[0].Headers[dispatch.HeaderReason].(string)
	if !strings.Contains(reason, apitype.AMQPSchemaHeader) || !strings.Contains(reason, "newer") ||
		dead[0].Headers[apitype.AMQPSchemaHeader] != int32(2) {
		t.Errorf("dead letter headers %v", dead[0].Headers)
	}
	if _, ok := h.store.FSM().GetWork("future"); ok {
		t.Error("the newer-schema request was recorded")
	}
	for _, m := range fb.WaitMessages("chiffon.results", 2, 5*time.Second) {
		if m.Headers[apitype.AMQPSchemaHeader] != int32(apitype.AMQPSchemaVersion) {
			t.Errorf("result %s: header %s = %v, want %d", m.MessageID, apitype.AMQPSchemaHeader,
				m.Headers[apitype.AMQPSchemaHeader], apitype.AMQPSchemaVersion)
		}
	}
}

func TestCheckSchema(t *testing.T) {
	for _, c := range []struct {
		v  any
		ok bool
	}{{nil, true}, {int32(1), true}, {int64(1), true}, {"1", true}, {int32(2), false}, {"2", false},
		{"x", false}, {int32(0), false}, {1.5, false}} {
		h := map[string]any{}
		if c.v != nil {
			h[apitype.AMQPSchemaHeader] = c.v
		}
		err := dispatch.CheckSchema(h)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, dispatch.ErrBadRequest)) {
			t.Errorf("%T %v: %v; want ok=%v", c.v, c.v, err, c.ok)
		}
	}
}
