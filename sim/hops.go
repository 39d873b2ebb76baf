package sim

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node/telemetry"
)

// hopLog follows each tag change (by the seq its load 15 carries) through
// the hops between the driver and the leader's registry: when the
// desktop's gossip handed it to the telemetry reporter (offer), and when a
// push carrying it was taken by the leader (ack). The observer reads both
// when the registry shows the change, so the report can say which hop a
// slow change waited in (Report.TagHops).
type hopLog struct {
	mu      sync.Mutex
	offered map[string]map[int]time.Time // desktop → seq → first offer
	acked   map[string]map[int]time.Time // desktop → seq → first push taken
}

func newHopLog() *hopLog {
	return &hopLog{offered: map[string]map[int]time.Time{}, acked: map[string]map[int]time.Time{}}
}

// seqOfTags is the change seq a desktop's tags carry (load 15 × 100), or
// -1.
func seqOfTags(tags map[string]string) int {
	f := strings.Split(tags[gossip.TagCPU], "/")
	if len(f) < 3 {
		return -1
	}
	v, err := strconv.ParseFloat(f[2], 64)
	if err != nil {
		return -1
	}
	return int(math.Round(v * 100))
}

func firstAt(m map[string]map[int]time.Time, name string, seq int, at time.Time) {
	byseq := m[name]
	if byseq == nil {
		byseq = map[int]time.Time{}
		m[name] = byseq
	}
	if _, ok := byseq[seq]; !ok {
		byseq[seq] = at
	}
}

// offer records that desktop name's gossip handed tags to its reporter.
func (h *hopLog) offer(name string, tags map[string]string) {
	seq := seqOfTags(tags)
	if seq < 0 {
		return
	}
	now := time.Now()
	h.mu.Lock()
	firstAt(h.offered, name, seq, now)
	h.mu.Unlock()
}

// ack records that a push of seq for desktop name was taken.
func (h *hopLog) ack(name string, seq int, at time.Time) {
	h.mu.Lock()
	firstAt(h.acked, name, seq, at)
	h.mu.Unlock()
}

// take returns and forgets the offer and ack times of desktop name's
// seqs (zero where none was seen): the registry shows them, they are
// done.
func (h *hopLog) take(name string, seqs []int) (offered, acked []time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range seqs {
		offered = append(offered, h.offered[name][s])
		acked = append(acked, h.acked[name][s])
		delete(h.offered[name], s)
		delete(h.acked[name], s)
	}
	return offered, acked
}

// pushTracer sits in front of the reporters' HTTP transport and records
// every push the leader takes.
type pushTracer struct {
	next http.RoundTripper
	log  *hopLog
}

// pushPrefix is the telemetry path before the node's name.
var pushPrefix = strings.TrimSuffix(telemetry.Path, "{node}")

func (p pushTracer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPut || req.GetBody == nil || !strings.HasPrefix(req.URL.Path, pushPrefix) {
		return p.next.RoundTrip(req)
	}
	name, err := url.PathUnescape(strings.TrimPrefix(req.URL.Path, pushPrefix))
	seq := -1
	if err == nil {
		seq = pushedSeq(req)
	}
	resp, err := p.next.RoundTrip(req)
	if err == nil && seq >= 0 && (resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK) {
		p.log.ack(name, seq, time.Now())
	}
	return resp, err
}

// pushedSeq is the change seq in a push's body, or -1.
func pushedSeq(req *http.Request) int {
	body, err := req.GetBody()
	if err != nil {
		return -1
	}
	defer body.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, body); err != nil {
		return -1
	}
	var rep telemetry.Report
	if json.Unmarshal(buf.Bytes(), &rep) != nil {
		return -1
	}
	return seqOfTags(rep.Tags)
}

// CloseIdleConnections closes the traced transport's idle connections
// (http.Client.CloseIdleConnections reaches a transport only through
// this method).
func (p pushTracer) CloseIdleConnections() {
	if c, ok := p.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// TagHops splits tag_to_registry by hop, in real seconds, for the
// changes the registry showed themselves (Landed); a change overtaken by
// the desktop's next one before the registry showed it is counted apart
// (Overtaken, and its latency in OvertakenP99S). Queue: from the change
// to its offer to the telemetry reporter (the driver's update pool and
// the desktop's gossip lock); Push: from the offer until a push carrying
// it was taken; Registry: from that push until the leader's registry
// held it. ViaGossip counts landed changes no push carried (the registry
// had them from gossip first, or no push was taken).
type TagHops struct {
	Landed         int     `json:"landed"`
	Overtaken      int     `json:"overtaken"`
	ViaGossip      int     `json:"via_gossip"`
	QueueP50S      float64 `json:"queue_p50_s"`
	QueueP99S      float64 `json:"queue_p99_s"`
	PushP50S       float64 `json:"push_p50_s"`
	PushP99S       float64 `json:"push_p99_s"`
	RegistryP50S   float64 `json:"registry_p50_s"`
	RegistryP99S   float64 `json:"registry_p99_s"`
	OvertakenP99S  float64 `json:"overtaken_p99_s"`
	SlowestTotalS  float64 `json:"slowest_total_s"`
	SlowestQueueS  float64 `json:"slowest_queue_s"`
	SlowestPushS   float64 `json:"slowest_push_s"`
	SlowestRegS    float64 `json:"slowest_registry_s"`
	SlowestDesktop string  `json:"slowest_desktop,omitempty"`
}

// hopSamples collects TagHops' figures (wall seconds) until the end.
type hopSamples struct {
	queue, push, reg, overtaken []float64
	landed, viaGossip           int
	slowest                     [4]float64
	slowestName                 string
}

// add records one landed change: made at made, offered, acked (zero:
// unknown), in the registry at seen.
func (s *hopSamples) add(name string, made, offered, acked, seen time.Time) {
	s.landed++
	total := seen.Sub(made).Seconds()
	var q, p, g float64 = -1, -1, -1
	if !offered.IsZero() {
		q = offered.Sub(made).Seconds()
		s.queue = append(s.queue, q)
	}
	if acked.IsZero() || offered.IsZero() {
		s.viaGossip++
	} else {
		p = acked.Sub(offered).Seconds()
		// The leader may apply a push before its answer is back.
		g = max(0, seen.Sub(acked).Seconds())
		s.push = append(s.push, p)
		s.reg = append(s.reg, g)
	}
	if total > s.slowest[0] {
		s.slowest = [4]float64{total, q, p, g}
		s.slowestName = name
	}
}

func (s *hopSamples) report(scale float64) TagHops {
	sc := func(v float64) float64 {
		if v < 0 {
			return v
		}
		return v * scale
	}
	return TagHops{Landed: s.landed, Overtaken: len(s.overtaken), ViaGossip: s.viaGossip,
		QueueP50S: sc(percentile(s.queue, 50)), QueueP99S: sc(percentile(s.queue, 99)),
		PushP50S: sc(percentile(s.push, 50)), PushP99S: sc(percentile(s.push, 99)),
		RegistryP50S: sc(percentile(s.reg, 50)), RegistryP99S: sc(percentile(s.reg, 99)),
		OvertakenP99S: sc(percentile(s.overtaken, 99)),
		SlowestTotalS: sc(s.slowest[0]), SlowestQueueS: sc(s.slowest[1]), SlowestPushS: sc(s.slowest[2]),
		SlowestRegS: sc(s.slowest[3]), SlowestDesktop: s.slowestName}
}
