package gossip

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"
)

// TestLocalCommand_AnswersOnlyItsOwnNode: a local command sent through a
// node's serf RPC runs on that node, not on the other member; errors and
// unknown commands come back as errors; and a query of the same name sent
// by another member is refused.
func TestLocalCommand_AnswersOnlyItsOwnNode(t *testing.T) {
	a := start(t, fastConfig(t, "a"))
	cb := fastConfig(t, "b")
	cb.Join = []string{a.Addr()}
	b := start(t, cb)
	waitFor(t, 5*time.Second, "both alive", func() bool { return memberStatus(a, "b") == "alive" && memberStatus(b, "a") == "alive" })

	var ranOnA, ranOnB atomic.Int32
	a.HandleLocal("echo", func(p []byte) ([]byte, error) {
		ranOnA.Add(1)
		if string(p) == "fail" {
			return nil, errors.New("asked to fail")
		}
		return append([]byte("a says "), p...), nil
	})
	b.HandleLocal("echo", func(p []byte) ([]byte, error) { ranOnB.Add(1); return []byte("b"), nil })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, err := ReadRPCAuthKey(a.cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LocalCommand(ctx, a.RPCAddr(), key, "echo", []byte("hi"))
	if err != nil || string(got) != "a says hi" {
		t.Fatalf("LocalCommand = %q, %v; want \"a says hi\"", got, err)
	}
	if _, err := LocalCommand(ctx, a.RPCAddr(), key, "echo", []byte("fail")); err == nil || !strings.Contains(err.Error(), "asked to fail") {
		t.Fatalf("failing command: err = %v", err)
	}
	if _, err := LocalCommand(ctx, a.RPCAddr(), key, "nope", nil); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("unknown command: err = %v, want ErrUnknownCommand", err)
	}
	if _, err := LocalCommand(ctx, a.RPCAddr(), "wrong-token", "echo", nil); err == nil {
		t.Fatal("a wrong RPC token was accepted")
	}
	if n := ranOnB.Load(); n != 0 {
		t.Fatalf("b ran a's command %d times", n)
	}

	// b, a member holding the gossip key, sends the same query to a: a
	// refuses it (no answer, the handler does not run).
	before := ranOnA.Load()
	resp, err := b.Serf().Query(localQueryPrefix+"echo", []byte("from b"), &serf.QueryParam{
		FilterNodes: []string{"a"}, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for r := range resp.ResponseCh() {
		t.Fatalf("a answered another member's local command: %+v", r)
	}
	if ranOnA.Load() != before {
		t.Fatal("a ran a local command sent by b")
	}
}
