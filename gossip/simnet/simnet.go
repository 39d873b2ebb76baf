// Package simnet is a simulated network for running many real memberlist
// (and so serf) nodes in one process: a Network hands out one Transport per
// node, and every packet between them goes through one scheduler that
// applies the link's latency, jitter, loss, bandwidth cap, reordering and
// partitions, without a goroutine or timer per packet and without ever
// blocking a sender. See DESIGN.md for the model, what it leaves out and
// how time scale works.
package simnet

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Errors returned by this package.
var (
	// ErrClosed is returned by calls on a shut down Transport or a closed
	// Network.
	ErrClosed = errors.New("simnet: closed")
	// ErrNoRoute means a dial named an address no live node has.
	ErrNoRoute = errors.New("simnet: no route to host")
	// ErrPartitioned means a dial crossed a cut between two groups, or an
	// open stream broke because one was cut.
	ErrPartitioned = errors.New("simnet: partitioned")
	// ErrDuplicate means NewTransport was given a name already in use.
	ErrDuplicate = errors.New("simnet: duplicate node name")
)

// Link is what one direction between two nodes does to the packets on it.
// Durations and the bandwidth are in simulated time; the Network's
// TimeScale turns them into wall-clock time.
type Link struct {
	// Latency is the base one-way delay.
	Latency time.Duration
	// Jitter adds a uniform random delay in [0, Jitter) to each packet, so
	// packets may overtake each other when Jitter exceeds their spacing.
	Jitter time.Duration
	// Loss is the probability in [0, 1] that a packet is dropped.
	Loss float64
	// Bandwidth caps the link in bytes per second (0: unlimited). Packets
	// queue behind each other; a packet that would wait more than MaxQueue
	// is dropped, as a router drops its tail.
	Bandwidth int64
	// Reorder is the probability in [0, 1] that a packet is held back by
	// ReorderDelay, so later packets overtake it.
	Reorder float64
	// ReorderDelay is the extra delay of a reordered packet (0: Latency, or
	// 1 ms when Latency is 0).
	ReorderDelay time.Duration
}

// MaxQueue is the longest a packet waits behind others on a link with a
// bandwidth cap before it is dropped (simulated time).
const MaxQueue = time.Second

// Config configures a Network. Zero fields take DefaultConfig's values.
type Config struct {
	// Seed makes loss, jitter and reordering repeatable for one schedule of
	// senders (the order of concurrent sends is still the Go scheduler's).
	Seed uint64
	// TimeScale divides every simulated delay: at 10, a 20 ms latency takes
	// 2 ms of wall time and a link carries ten times its Bandwidth per
	// wall-clock second. Scale the SWIM timings by the same factor.
	TimeScale float64
	// Default is the link between any two nodes without their own SetLink.
	Default Link
	// PacketQueue is each node's receive queue (packets). When a node reads
	// too slowly the queue fills and further packets are dropped, as a
	// full socket buffer drops datagrams; senders never block.
	PacketQueue int
	// StreamQueue is how many dialed streams may wait for the node to take
	// them from StreamCh; a dial waits (up to its timeout) when it is full.
	StreamQueue int
}

// DefaultConfig is a lossless network with no delay at real time.
func DefaultConfig() Config {
	return Config{Seed: 1, TimeScale: 1, PacketQueue: 1024, StreamQueue: 64}
}

// Stats counts what happened to the packets sent on a Network.
type Stats struct {
	Sent      uint64 // WriteTo calls from live transports
	Delivered uint64 // packets put on a receiver's queue
	Lost      uint64 // dropped by the link's Loss
	Cut       uint64 // dropped by a partition
	NoRoute   uint64 // addressed to no live node
	Overflow  uint64 // dropped because the receiver's queue was full
	QueueDrop uint64 // dropped because a bandwidth-capped link was backed up
}

type linkKey struct{ from, to string }

// Network is one simulated network. Its methods are safe for concurrent
// use; changes to links and partitions apply to packets sent afterwards
// (and cuts also break open streams at once).
type Network struct {
	cfg  Config
	wake chan struct{} // cap 1: the earliest delivery changed
	done chan struct{} // closed by Close
	wg   sync.WaitGroup

	// Senders only read the topology, so they share mu; changes take it
	// alone. The queue, the bandwidth books and the open streams have
	// their own locks, taken after mu when both are needed, so that
	// thousands of senders do not queue on one lock.
	mu     sync.RWMutex
	byAddr map[string]*Transport // guarded by mu; live transports
	byName map[string]*Transport // guarded by mu; live transports
	nextIP uint32                // guarded by mu
	def    Link                  // guarded by mu
	links  map[linkKey]Link      // guarded by mu
	group  map[string]string     // guarded by mu; node name → group
	cuts   map[[2]string]bool    // guarded by mu; sorted group pairs that are cut
	closed bool                  // guarded by mu

	bwMu sync.Mutex
	busy map[linkKey]time.Time // guarded by bwMu; end of the last transmission on capped links

	cmu   sync.Mutex
	conns map[*conn]struct{} // guarded by cmu; the dialer's end of each open stream

	qmu      sync.Mutex
	queue    deliveryHeap // guarded by qmu
	seq      uint64       // guarded by qmu
	freeList []*delivery  // guarded by qmu

	stats counters
}

// counters is Stats, updated atomically.
type counters struct {
	sent, delivered, lost, cut, noRoute, overflow, queueDrop atomic.Uint64
}

// New starts a Network and its scheduler goroutine; Close stops it.
func New(cfg Config) (*Network, error) {
	def := DefaultConfig()
	if cfg.TimeScale == 0 {
		cfg.TimeScale = def.TimeScale
	}
	if cfg.TimeScale < 0 {
		return nil, fmt.Errorf("simnet: time scale %v is negative", cfg.TimeScale)
	}
	if cfg.PacketQueue == 0 {
		cfg.PacketQueue = def.PacketQueue
	}
	if cfg.StreamQueue == 0 {
		cfg.StreamQueue = def.StreamQueue
	}
	if err := cfg.Default.validate(); err != nil {
		return nil, err
	}
	n := &Network{
		cfg:    cfg,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		byAddr: make(map[string]*Transport),
		byName: make(map[string]*Transport),
		nextIP: 1,
		def:    cfg.Default,
		links:  make(map[linkKey]Link),
		group:  make(map[string]string),
		cuts:   make(map[[2]string]bool),
		conns:  make(map[*conn]struct{}),
		busy:   make(map[linkKey]time.Time),
	}
	n.wg.Add(1)
	go n.run()
	return n, nil
}

func (l Link) validate() error {
	if l.Latency < 0 || l.Jitter < 0 || l.ReorderDelay < 0 || l.Bandwidth < 0 {
		return fmt.Errorf("simnet: link has a negative delay or bandwidth: %+v", l)
	}
	if l.Loss < 0 || l.Loss > 1 || l.Reorder < 0 || l.Reorder > 1 {
		return fmt.Errorf("simnet: link probability outside [0, 1]: %+v", l)
	}
	return nil
}

// wall turns a simulated duration into wall-clock time.
func (n *Network) wall(d time.Duration) time.Duration {
	return time.Duration(float64(d) / n.cfg.TimeScale)
}

// TimeScale is the Config's TimeScale.
func (n *Network) TimeScale() float64 { return n.cfg.TimeScale }

// NewTransport adds a node called name (unique on the Network; it is what
// SetLink and Partition name) with its own address, 10.x.y.z:7946.
func (n *Network) NewTransport(name string) (*Transport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	if _, ok := n.byName[name]; ok {
		return nil, fmt.Errorf("%w: %q", ErrDuplicate, name)
	}
	ipn := n.nextIP
	n.nextIP++
	// Each node draws its own loss, jitter and reordering from a stream
	// seeded by the network's seed and its place in the order of creation.
	rng := rand.New(rand.NewPCG(n.cfg.Seed, uint64(ipn)))
	ip := net.IPv4(10, byte(ipn>>16), byte(ipn>>8), byte(ipn))
	t := &Transport{
		net:      n,
		name:     name,
		udp:      &net.UDPAddr{IP: ip, Port: 7946},
		tcp:      &net.TCPAddr{IP: ip, Port: 7946},
		packetCh: make(chan *memberlist.Packet, n.cfg.PacketQueue),
		streamCh: make(chan net.Conn, n.cfg.StreamQueue),
		shutdown: make(chan struct{}),
		rng:      rng,
	}
	t.addr = t.udp.String()
	n.byAddr[t.addr] = t
	n.byName[name] = t
	return t, nil
}

// SetDefault changes the link between nodes without their own SetLink.
func (n *Network) SetDefault(l Link) error {
	if err := l.validate(); err != nil {
		return err
	}
	n.mu.Lock()
	n.def = l
	n.mu.Unlock()
	return nil
}

// SetLink sets the link from one node to another (one direction; call it
// twice for both). The nodes need not exist yet.
func (n *Network) SetLink(from, to string, l Link) error {
	if err := l.validate(); err != nil {
		return err
	}
	n.mu.Lock()
	n.links[linkKey{from, to}] = l
	n.mu.Unlock()
	return nil
}

// ClearLink makes the link from one node to another the default again.
func (n *Network) ClearLink(from, to string) {
	n.mu.Lock()
	delete(n.links, linkKey{from, to})
	n.mu.Unlock()
}

// Partition puts the named nodes in group (every node starts in group "").
// Groups only matter once Cut separates them.
func (n *Network) Partition(group string, nodes ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, name := range nodes {
		if group == "" {
			delete(n.group, name)
		} else {
			n.group[name] = group
		}
	}
	n.breakCutConnsLocked()
}

func groupPair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Cut separates two groups in both directions: packets between them are
// dropped, dials fail with ErrPartitioned and open streams break.
func (n *Network) Cut(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if a == b {
		return
	}
	n.cuts[groupPair(a, b)] = true
	n.breakCutConnsLocked()
}

// Heal undoes Cut(a, b).
func (n *Network) Heal(a, b string) {
	n.mu.Lock()
	delete(n.cuts, groupPair(a, b))
	n.mu.Unlock()
}

// HealAll undoes every Cut (groups stay as they are).
func (n *Network) HealAll() {
	n.mu.Lock()
	clear(n.cuts)
	n.mu.Unlock()
}

// Reachable reports whether a cut separates from and to now: what a
// simulation asks before traffic of its own between two nodes (`chiffon
// sim`'s telemetry pushes over loopback HTTP) that should honour the
// network's partitions.
func (n *Network) Reachable(from, to string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.cutLocked(from, to)
}

func (n *Network) cutLocked(from, to string) bool {
	if len(n.cuts) == 0 {
		return false
	}
	ga, gb := n.group[from], n.group[to]
	return ga != gb && n.cuts[groupPair(ga, gb)]
}

func (n *Network) breakCutConnsLocked() {
	n.cmu.Lock()
	defer n.cmu.Unlock()
	for c := range n.conns {
		if n.cutLocked(c.local.name, c.remote.name) {
			delete(n.conns, c)
			c.breakPair(ErrPartitioned)
		}
	}
}

// Stats returns the packet counters so far.
func (n *Network) Stats() Stats {
	c := &n.stats
	return Stats{
		Sent: c.sent.Load(), Delivered: c.delivered.Load(), Lost: c.lost.Load(),
		Cut: c.cut.Load(), NoRoute: c.noRoute.Load(), Overflow: c.overflow.Load(),
		QueueDrop: c.queueDrop.Load(),
	}
}

// Close shuts down every transport, breaks every stream and stops the
// scheduler; packets still in flight are dropped. It is idempotent.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	ts := make([]*Transport, 0, len(n.byName))
	for _, t := range n.byName {
		ts = append(ts, t)
	}
	n.mu.Unlock()
	for _, t := range ts {
		_ = t.Shutdown()
	}
	close(n.done)
	n.wg.Wait()
	n.qmu.Lock()
	n.queue = nil
	n.freeList = nil
	n.qmu.Unlock()
	return nil
}

// send schedules one packet from t to addr; it never blocks on the receiver.
func (n *Network) send(from *Transport, b []byte, addr string) error {
	n.mu.RLock()
	if n.closed {
		n.mu.RUnlock()
		return ErrClosed
	}
	n.stats.sent.Add(1)
	to, ok := n.byAddr[addr]
	if !ok {
		n.mu.RUnlock()
		n.stats.noRoute.Add(1)
		return nil
	}
	if n.cutLocked(from.name, to.name) {
		n.mu.RUnlock()
		n.stats.cut.Add(1)
		return nil
	}
	key := linkKey{from.name, to.name}
	l, ok := n.links[key]
	if !ok {
		l = n.def
	}
	n.mu.RUnlock()

	delay, lost := from.draw(&l)
	if lost {
		n.stats.lost.Add(1)
		return nil
	}
	now := time.Now()
	at := now.Add(n.wall(delay))
	if l.Bandwidth > 0 {
		tx := n.wall(time.Duration(float64(len(b)) / float64(l.Bandwidth) * float64(time.Second)))
		n.bwMu.Lock()
		start := now
		if busy := n.busy[key]; busy.After(start) {
			start = busy
		}
		if start.Sub(now) > n.wall(MaxQueue) {
			n.bwMu.Unlock()
			n.stats.queueDrop.Add(1)
			return nil
		}
		n.busy[key] = start.Add(tx)
		n.bwMu.Unlock()
		at = start.Add(tx + n.wall(delay))
	}
	pkt := &memberlist.Packet{Buf: append([]byte(nil), b...), From: from.udp}

	n.qmu.Lock()
	if !at.After(now) && n.queue.Len() == 0 {
		// Nothing to wait for and nothing ahead of it: hand it over now
		// (under qmu, so a packet queued after it cannot overtake it).
		pkt.Timestamp = now
		n.deliver(to, pkt)
		n.qmu.Unlock()
		return nil
	}
	var d *delivery
	if k := len(n.freeList); k > 0 {
		d, n.freeList = n.freeList[k-1], n.freeList[:k-1]
	} else {
		d = new(delivery)
	}
	n.seq++
	*d = delivery{at: at, seq: n.seq, to: to, pkt: pkt}
	heap.Push(&n.queue, d)
	first := n.queue[0] == d
	n.qmu.Unlock()
	if first {
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// deliver puts pkt on to's queue, or drops it if the queue is full or to
// has shut down. It never blocks.
func (n *Network) deliver(to *Transport, pkt *memberlist.Packet) {
	if to.isShutdown.Load() {
		n.stats.noRoute.Add(1)
		return
	}
	select {
	case to.packetCh <- pkt:
		n.stats.delivered.Add(1)
	default:
		n.stats.overflow.Add(1)
	}
}

// run is the scheduler: the one goroutine that releases delayed packets
// when their time comes. Close stops it.
func (n *Network) run() {
	defer n.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n.qmu.Lock()
		now := time.Now()
		for n.queue.Len() > 0 && !n.queue[0].at.After(now) {
			d := heap.Pop(&n.queue).(*delivery)
			d.pkt.Timestamp = now
			n.deliver(d.to, d.pkt)
			*d = delivery{}
			n.freeList = append(n.freeList, d)
		}
		wait := time.Hour
		if n.queue.Len() > 0 {
			wait = n.queue[0].at.Sub(now)
		}
		n.qmu.Unlock()
		timer.Reset(wait)
		select {
		case <-n.done:
			return
		case <-n.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// delivery is one packet waiting in the scheduler.
type delivery struct {
	at  time.Time
	seq uint64 // tie-break: equal times leave in send order
	to  *Transport
	pkt *memberlist.Packet
}

type deliveryHeap []*delivery

func (h deliveryHeap) Len() int { return len(h) }
func (h deliveryHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h deliveryHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *deliveryHeap) Push(x any)   { *h = append(*h, x.(*delivery)) }
func (h *deliveryHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return d
}
