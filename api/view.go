package api

import (
	"bytes"
	"cmp"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/fleet"
)

// Capacity queries are the hot path. Rather than scan and marshal the whole
// registry per request, the server keeps a capacityView per registry index:
// the online desktops, sorted in answer order, each with its capacity JSON
// already marshalled. A request filters that slice and concatenates bytes.
// The view is rebuilt at most once per index change, lazily, by the first
// request that sees a newer index; records whose ModifyIndex did not change
// keep their marshalled bytes, so a heartbeat batch costs a List, a sort and
// the marshalling of the records it changed.

// capEntry is one agent in a capacityView.
type capEntry struct {
	id       string
	modify   uint64
	status   string
	desktop  bool
	maxFree  float64 // largest free VRAM on one GPU
	vramFree float64 // free VRAM on all GPUs
	cores    float64
	mem      float64
	gpuType  string
	reserved bool // work holds capacity here: never reused across indexes
	// ownerActive: the desktop's owner is at the keyboard (left out unless
	// include_owner_active).
	ownerActive bool
	json        []byte // the apitype.Capacity, marshalled with a null sample_age_s
	// sampledAt is the desktop's sample time; the answer's sample_age_s
	// is computed from it when the answer is written (appendEntry).
	sampledAt time.Time
}

// capacityView is the precomputed answer material for one registry index.
// It is immutable once published.
type capacityView struct {
	index uint64
	// online holds the online desktops in answer order: most free VRAM on
	// one GPU first, then most available cores, then agent_id.
	online []*capEntry
	// byID holds every agent, any status or role, for single-agent capacity
	// and for reuse by the next rebuild.
	byID map[string]*capEntry

	// answers caches the answer to a filter (capacityFilter →
	// *cachedAnswer); at most maxCachedAnswers filters are kept per view.
	answers  sync.Map
	nanswers atomic.Int32
}

// answer is one available-capacity answer, plain and (made on first
// request) gzip-compressed.
type answer struct {
	plain  []byte
	gzOnce sync.Once
	gz     []byte // nil when plain is below gzipMinBytes
}

// compressed returns a's gzip bytes, compressing them on the first call;
// nil for an answer too small to be worth it.
func (a *answer) compressed() []byte {
	a.gzOnce.Do(func() {
		if len(a.plain) >= gzipMinBytes {
			a.gz = gzipBytes(a.plain)
		}
	})
	return a.gz
}

// maxCachedAnswers bounds the answer cache of one view: callers that vary
// their bounds on every request must not grow memory without limit.
const maxCachedAnswers = 64

// cachedAnswer is one filter's answer: the matching entries in answer
// order, and their encoding as of a recent time. sample_age_s changes with
// the clock, so an encoding is reused for ageReuse at most (the ages it
// gives are then at most that much too young), and written again after.
type cachedAnswer struct {
	match []*capEntry
	enc   atomic.Pointer[encodedAnswer]
}

// encodedAnswer is an answer's bytes (plain, and gzip once asked for) and
// when their ages were computed.
type encodedAnswer struct {
	at time.Time
	answer
}

// ageReuse is how long an encoded answer is reused: sample_age_s is given
// to 0.1 s.
const ageReuse = 100 * time.Millisecond

// viewCache publishes the current capacityView.
type viewCache struct {
	reg Registry
	// reserved returns placed work's reservations (nil: none).
	reserved func() map[string]Reservation
	cur      atomic.Pointer[capacityView]
	// mu serialises rebuilds so that concurrent requests seeing a new index
	// rebuild once, not once each.
	mu sync.Mutex
	// builds counts rebuilds, for tests and metrics.
	builds atomic.Uint64
}

// get returns a view at least as new as the registry's index when get was
// called.
func (c *viewCache) get() *capacityView {
	idx := c.reg.Index()
	if v := c.cur.Load(); v != nil && v.index == idx {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.cur.Load()
	if old != nil && old.index >= idx {
		return old // another request rebuilt it while we waited
	}
	v := buildView(c.reg, c.reservations(), old)
	c.cur.Store(v)
	c.builds.Add(1)
	return v
}

// reservations calls the reserved func, if any.
func (c *viewCache) reservations() map[string]Reservation {
	if c.reserved == nil {
		return nil
	}
	return c.reserved()
}

// buildView reads the registry and builds its view, reusing old's entries
// for records that have not changed since and hold no reservation.
func buildView(reg Registry, reserved map[string]Reservation, old *capacityView) *capacityView {
	// Read the index first: the records listed next are at least as new,
	// so the view never claims an index newer than its content.
	idx := reg.Index()
	recs := reg.List()
	v := &capacityView{index: idx, byID: make(map[string]*capEntry, len(recs))}
	for i := range recs {
		r := &recs[i]
		var e *capEntry
		res, held := reserved[r.AgentID]
		if old != nil && !held {
			if oe, ok := old.byID[r.AgentID]; ok && oe.modify == r.ModifyIndex && r.ModifyIndex != 0 && !oe.reserved {
				e = oe
			}
		}
		if e == nil {
			var rp *Reservation
			if held {
				rp = &res
			}
			e = newCapEntry(r, rp)
		}
		v.byID[e.id] = e
		if e.desktop && e.status == string(consensus.StatusOnline) {
			v.online = append(v.online, e)
		}
	}
	slices.SortFunc(v.online, compareEntries)
	return v
}

// compareEntries is the documented answer order of available-capacity.
func compareEntries(a, b *capEntry) int {
	if c := cmp.Compare(b.maxFree, a.maxFree); c != 0 {
		return c
	}
	if c := cmp.Compare(b.cores, a.cores); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}

func newCapEntry(r *consensus.Record, res *Reservation) *capEntry {
	c := capacityOf(r, res)
	b, err := json.Marshal(c)
	if err != nil {
		// Only NaN or ±Inf in a metric can fail; the registry's JSON log
		// could not have stored them. Keep the agent out rather than break
		// every answer.
		b = nil
	}
	return &capEntry{
		id:          r.AgentID,
		modify:      r.ModifyIndex,
		status:      string(r.Status),
		desktop:     r.HasRole(apitype.RoleDesktop),
		maxFree:     c.GPUVRAMMaxFreeGB,
		vramFree:    c.GPUVRAMAvailableGB,
		cores:       c.CPUCoresAvailable,
		reserved:    res != nil,
		ownerActive: r.Owner == consensus.OwnerActive,
		mem:         r.Metrics.MemoryAvailableGB,
		gpuType:     strings.ToLower(r.Metrics.GPUType),
		json:        b,

		sampledAt: r.SampledAt,
	}
}

// ageNull is how an entry's cached encoding ends: sample_age_s is the
// last field of apitype.Capacity, null until appendEntry fills it in.
var ageNull = []byte(`"sample_age_s":null}`)

// appendEntry appends e's capacity JSON to dst with its sample_age_s as
// of now.
func appendEntry(dst []byte, e *capEntry, now time.Time) []byte {
	age, ok := ageSeconds(e.sampledAt, now)
	if !ok || !bytes.HasSuffix(e.json, ageNull) {
		return append(dst, e.json...)
	}
	dst = append(dst, e.json[:len(e.json)-len("null}")]...)
	dst = strconv.AppendFloat(dst, age, 'f', -1, 64)
	return append(dst, '}')
}

// capacityAnswer is GET /agents/{id}/capacity's answer for r at now.
func capacityAnswer(r *consensus.Record, res *Reservation, now time.Time) apitype.Capacity {
	c := capacityOf(r, res)
	c.SampleAgeS = sampleAge(r.SampledAt, now)
	return c
}

// capacityOf converts a registry record to its capacity answer, less the
// reservation of work placed on it (res may be nil).
func capacityOf(r *consensus.Record, res *Reservation) apitype.Capacity {
	m := &r.Metrics
	c := apitype.Capacity{
		AgentID:            r.AgentID,
		Name:               r.Name,
		Status:             string(r.Status),
		Reachable:          r.Reachable(),
		UnreachableSince:   unreachableSince(r),
		CPUCoresAvailable:  m.CPUCoresAvailable,
		CPUCoresPhysical:   m.CPUCoresPhysical,
		MemoryAvailableGB:  m.MemoryAvailableGB,
		GPUVRAMAvailableGB: m.GPUVRAMAvailableGB,
		GPUVRAMTotalGB:     m.GPUVRAMTotalGB,
		GPUVRAMMaxFreeGB:   m.GPUVRAMMaxFreeGB,
		GPUCount:           m.GPUCount,
		GPUType:            m.GPUType,
		Timestamp:          r.LastHeartbeatAt,
		GPUs:               gpusOf(m.GPUs),
		Owner:              r.Owner,
	}
	if res != nil && res.Items > 0 {
		subtractReservation(&c, res, r.SampledAt)
	}
	return c
}

// subtractReservation takes placed work's cores off the answer, and gives
// the VRAM the ledger offers (fleet.GPULedger): per GPU when the agent
// reports per-GPU detail, else on the aggregates as if on one GPU.
// sampledAt is when the desktop took the sample the answer shows (zero
// when unknown: every hold comes off it).
func subtractReservation(c *apitype.Capacity, res *Reservation, sampledAt time.Time) {
	rv := &c.Reserved
	rv.Items, rv.CPUCores = res.Items, res.CPUCores
	for _, v := range res.GPUVRAMGB {
		rv.GPUVRAMGB += v
	}
	c.CPUCoresAvailable = max(0, c.CPUCoresAvailable-res.CPUCores)
	// The desktop keeps its -owner-vram-headroom-gb out of the free
	// figures it gossips, so none is kept here a second time.
	const headroomGB = 0
	if len(c.GPUs) == 0 {
		var holds []fleet.VRAMHold
		for _, h := range res.VRAMHolds {
			holds = append(holds, h...)
		}
		all := fleet.GPULedger{TotalGB: c.GPUVRAMTotalGB, FreeGB: c.GPUVRAMAvailableGB, SampledAt: sampledAt,
			HeadroomGB: headroomGB * float64(max(c.GPUCount, 1)), Holds: holds}
		one := fleet.GPULedger{TotalGB: c.GPUVRAMTotalGB, FreeGB: c.GPUVRAMMaxFreeGB, SampledAt: sampledAt,
			HeadroomGB: headroomGB, Holds: holds}
		c.GPUVRAMAvailableGB, c.GPUVRAMMaxFreeGB = all.OfferedGB(), one.OfferedGB()
		return
	}
	for i := range c.GPUs {
		g := &c.GPUs[i]
		g.VRAMFreeGB = fleet.GPULedger{TotalGB: g.VRAMTotalGB, FreeGB: g.VRAMFreeGB, SampledAt: sampledAt,
			HeadroomGB: headroomGB, Holds: res.VRAMHolds[g.Index]}.OfferedGB()
	}
	v := fleet.SumVRAM(len(c.GPUs), func(i int) (float64, float64) { return c.GPUs[i].VRAMTotalGB, c.GPUs[i].VRAMFreeGB }, 0, 0)
	c.GPUVRAMAvailableGB, c.GPUVRAMMaxFreeGB = v.FreeGB, v.MaxFreeGB
}

// matches reports whether e meets every bound of f.
func (f *capacityFilter) matches(e *capEntry) bool {
	vram := e.maxFree
	if f.vramTotal {
		vram = e.vramFree
	}
	if e.ownerActive && !f.ownerActive {
		return false
	}
	return e.json != nil && vram >= f.minVRAM && e.cores >= f.minCores && e.mem >= f.minMem &&
		(f.gpuType == "" || e.gpuType == f.gpuType)
}

// available returns the encoded answer for f at now (plain, and gzip on
// demand): from the cache when an earlier request at this index asked the
// same, encoded less than ageReuse before now; else with the cached
// matching entries, encoded anew.
func (v *capacityView) available(f capacityFilter, now time.Time) *answer {
	var a *cachedAnswer
	if c, ok := v.answers.Load(f); ok {
		a = c.(*cachedAnswer)
	} else {
		a = &cachedAnswer{match: v.matching(&f)}
		if v.nanswers.Add(1) <= maxCachedAnswers {
			if c, loaded := v.answers.LoadOrStore(f, a); loaded {
				a = c.(*cachedAnswer) // a concurrent request made it first: share its encoding
			}
		}
	}
	if e := a.enc.Load(); e != nil && !now.Before(e.at) && now.Sub(e.at) < ageReuse {
		return &e.answer
	}
	e := &encodedAnswer{at: now, answer: answer{plain: appendEntries(make([]byte, 0, 1024), a.match, now)}}
	a.enc.Store(e)
	return &e.answer
}

// matching lists the online desktops that match f, in answer order.
func (v *capacityView) matching(f *capacityFilter) []*capEntry {
	var out []*capEntry
	for _, e := range v.online {
		if f.matches(e) {
			out = append(out, e)
		}
	}
	return out
}

// appendEntries appends the JSON array of entries, with their ages at
// now, to dst.
func appendEntries(dst []byte, entries []*capEntry, now time.Time) []byte {
	dst = append(dst, '[')
	for i, e := range entries {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendEntry(dst, e, now)
	}
	return append(dst, ']', '\n')
}
