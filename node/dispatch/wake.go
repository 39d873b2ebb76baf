package dispatch

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
)

// WakeConfig holds the leader's wake-on-LAN settings.
type WakeConfig struct {
	// Broadcast is the UDP address magic packets are sent to
	// (-wol-broadcast, default 255.255.255.255:9); "" turns waking off.
	Broadcast string
	// Timeout is how long the leader waits for a woken node to come
	// online (-wol-timeout): the pending work waits for it meanwhile, and
	// the node is not sent another packet before it is over.
	Timeout time.Duration
	// MaxPerMinute caps wakes in the whole cluster over any minute
	// (-wol-max-per-minute), so that a burst of work cannot power on a
	// whole office at once; 0 turns waking off.
	MaxPerMinute int
	// Send sends one magic packet for mac; nil sends it over UDP to
	// Broadcast (SendMagicPacket).
	Send func(ctx context.Context, mac net.HardwareAddr) error
}

// DefaultWakeConfig returns the defaults.
func DefaultWakeConfig() WakeConfig {
	return WakeConfig{Broadcast: "255.255.255.255:9", Timeout: 3 * time.Minute, MaxPerMinute: 10}
}

// enabled reports whether the leader may wake nodes.
func (c WakeConfig) enabled() bool { return c.Broadcast != "" && c.MaxPerMinute > 0 && c.Timeout > 0 }

// wakeWindow is the window of WakeConfig.MaxPerMinute.
const wakeWindow = time.Minute

// Wakes decides, at now, which asleep nodes to wake for pending work that
// no awake node can take. It is pure, like Plan, and reads only the
// registry: when each node was last woken is in raft
// (consensus.Record.WakeSentAt, written by WakeNode before the packet is
// sent), so a new leader counts the wakes of its predecessors and sends no
// burst. The rules:
//
//   - only pending work that Place cannot put on any node now, oldest
//     first (Plan runs first and places what fits);
//   - a node can be woken if it is asleep, gossiped a MAC address, and by
//     its last known capacity (as Eligible judges an online, reachable
//     node, after the reservations of work already placed there) would
//     take the item;
//   - work that fits a node already being woken (a packet sent less than
//     Timeout ago, or chosen earlier in this call) waits for that node;
//     no second node is woken for it;
//   - otherwise the node Place would pick among the asleep ones is woken,
//     at most one packet per node per Timeout, and at most MaxPerMinute
//     in the cluster over the last minute.
//
// Each WakeNode names the items it is for; their history records it.
func Wakes(now time.Time, nodes []consensus.Record, items []consensus.WorkItem, cfg WakeConfig) []consensus.WakeNode {
	if !cfg.enabled() {
		return nil
	}
	budget := cfg.MaxPerMinute
	var awake, waking, sleeping []consensus.Record
	for _, n := range nodes {
		if !n.WakeSentAt.IsZero() && now.Sub(n.WakeSentAt) < wakeWindow {
			budget--
		}
		if n.Status == consensus.StatusAsleep {
			// Judged by its last known capacity, as if it were online and
			// reachable: a desktop that fell asleep with work on it is
			// unreachable until the leader's probe hears it again, which
			// only a wake can bring about.
			n.UnreachableSince = time.Time{}
		}
		switch {
		case n.Status != consensus.StatusAsleep:
			awake = append(awake, n)
		case n.MAC == "":
			// Cannot be woken.
		case !n.WakeSentAt.IsZero() && now.Sub(n.WakeSentAt) < cfg.Timeout:
			n.Status = consensus.StatusOnline
			waking = append(waking, n)
		default:
			n.Status = consensus.StatusOnline
			sleeping = append(sleeping, n)
		}
	}
	if len(waking)+len(sleeping) == 0 {
		return nil
	}
	byID := func(a, b consensus.Record) int { return strings.Compare(a.AgentID, b.AgentID) }
	slices.SortFunc(awake, byID)
	slices.SortFunc(waking, byID)
	slices.SortFunc(sleeping, byID)
	items = slices.Clone(items)
	consensus.SortWork(items)
	reserved := Reserved(items)
	var out []consensus.WakeNode
	index := map[string]int{} // agent ID → its entry in out
	for _, w := range items {
		if w.Status != consensus.WorkPending || w.Attempts >= w.MaxAttempts || !now.Before(w.Deadline) {
			continue
		}
		if _, ok := Place(awake, reserved, w); ok {
			continue // Plan will place it
		}
		reserve := func(p Placement) {
			res := reserved[p.AgentID]
			res.add(w, p.GPUIndex, 1, now, time.Time{})
			reserved[p.AgentID] = res
		}
		if p, ok := Place(waking, reserved, w); ok {
			reserve(p)
			if i, ok := index[p.AgentID]; ok {
				out[i].WorkIDs = append(out[i].WorkIDs, w.WorkID)
			}
			continue
		}
		if budget <= 0 {
			continue
		}
		p, ok := Place(sleeping, reserved, w)
		if !ok {
			continue
		}
		reserve(p)
		budget--
		i := slices.IndexFunc(sleeping, func(n consensus.Record) bool { return n.AgentID == p.AgentID })
		n := sleeping[i]
		sleeping = slices.Delete(sleeping, i, i+1)
		waking = append(waking, n)
		slices.SortFunc(waking, byID)
		index[n.AgentID] = len(out)
		out = append(out, consensus.WakeNode{At: now, AgentID: n.AgentID, MAC: n.MAC, WorkIDs: []string{w.WorkID}})
	}
	return out
}

// MagicPacket is the wake-on-LAN frame for mac: six 0xFF bytes, then the
// address sixteen times.
func MagicPacket(mac net.HardwareAddr) []byte {
	p := make([]byte, 0, 6+16*len(mac))
	for range 6 {
		p = append(p, 0xff)
	}
	for range 16 {
		p = append(p, mac...)
	}
	return p
}

// SendMagicPacket sends mac's magic packet as one UDP datagram to addr
// (HOST:PORT, usually a broadcast address such as 255.255.255.255:9 or
// the subnet's, e.g. 10.0.0.255:9), with SO_BROADCAST set so that the
// kernel lets it out.
func SendMagicPacket(ctx context.Context, addr string, mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("wake-on-LAN: MAC %s is not 6 bytes", mac)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", ":0")
	if err != nil {
		return fmt.Errorf("wake-on-LAN socket: %w", err)
	}
	defer pc.Close()
	dst, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return fmt.Errorf("wake-on-LAN address %q: %w", addr, err)
	}
	if _, err := pc.WriteTo(MagicPacket(mac), dst); err != nil {
		return fmt.Errorf("wake-on-LAN to %s: %w", addr, err)
	}
	return nil
}

// wake records each of Wakes' decisions in raft, then sends its packet.
// A decision that did not commit sends nothing (this node may no longer
// lead); a packet that is lost after the commit is sent again once the
// Timeout is over.
func (d *Dispatcher) wake(ctx context.Context, now time.Time, nodes []consensus.Record, items []consensus.WorkItem) {
	wakes := Wakes(now, nodes, items, d.cfg.Wake)
	if len(wakes) > 0 && !d.supports(consensus.CmdWakeNode) {
		d.mixedOnce.Do(func() {
			d.logger.Warn("not waking asleep desktops while some orchestrator runs an older release (it cannot apply the wake record); finish the upgrade",
				"agent-id", wakes[0].AgentID)
		})
		return
	}
	for _, c := range wakes {
		if _, err := d.store.Apply(c, d.cfg.ApplyTimeout); err != nil {
			d.logger.Warn("recording a wake-on-LAN failed; not sending it", "agent-id", c.AgentID, "err", err)
			return
		}
		mac, err := net.ParseMAC(c.MAC)
		if err == nil {
			err = d.sendWake(ctx, mac)
		}
		if err != nil {
			d.logger.Warn("wake-on-LAN failed", "agent-id", c.AgentID, "mac", c.MAC, "to", d.cfg.Wake.Broadcast, "err", err)
			continue
		}
		d.logger.Info("woke an asleep node for work that fits only there", "agent-id", c.AgentID, "mac", c.MAC,
			"to", d.cfg.Wake.Broadcast, "work", len(c.WorkIDs), "first-work-id", c.WorkIDs[0], "wait", d.cfg.Wake.Timeout)
	}
}

func (d *Dispatcher) sendWake(ctx context.Context, mac net.HardwareAddr) error {
	if d.cfg.Wake.Send != nil {
		return d.cfg.Wake.Send(ctx, mac)
	}
	return SendMagicPacket(ctx, d.cfg.Wake.Broadcast, mac)
}
