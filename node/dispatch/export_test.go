package dispatch

import (
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
)

// YieldHintsForTest exposes the leader's hand-back hints (owner.go).
type YieldHintsForTest struct{ y *yieldHints }

func NewYieldHintsForTest() YieldHintsForTest { return YieldHintsForTest{newYieldHints()} }

func (h YieldHintsForTest) Mark(agent string, now time.Time) { h.y.mark(agent, now) }

func (h YieldHintsForTest) Apply(now time.Time, nodes []consensus.Record) []consensus.Record {
	return h.y.apply(now, nodes)
}
