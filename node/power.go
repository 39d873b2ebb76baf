package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/chiffon-dev/chiffon/probe/owner"
)

// PowerConfig holds a desktop's sleep and wake-on-LAN settings.
type PowerConfig struct {
	// WOL makes the desktop gossip the MAC address of the interface it
	// binds (tag mac), so that the leader can wake it with a magic packet
	// (-wol; false opts out).
	WOL bool
	// MACAddress overrides the address gossiped (-mac-address): for a
	// machine bound to 0.0.0.0 on several interfaces, or a test on
	// loopback, which has none.
	MACAddress string
	// Logind makes the desktop follow logind's PrepareForSleep signal
	// (holding a delay inhibitor lock) and announce a suspend itself, as
	// the sleep hook does (-logind-sleep). Without logind on the system
	// bus it logs that once and relies on the hook.
	Logind bool
	// LogindAddress is the bus logind is on; "" is the system bus (tests
	// give a private one).
	LogindAddress string
}

// validate checks the MAC override.
func (c PowerConfig) validate() error {
	if c.MACAddress == "" {
		return nil
	}
	if hw, err := net.ParseMAC(c.MACAddress); err != nil || len(hw) != 6 {
		return fmt.Errorf("%w: -mac-address: %q is not a 6-byte MAC address such as 0a:1b:2c:3d:4e:5f", ErrInvalidConfig, c.MACAddress)
	}
	return nil
}

// Power commands (`chiffon power suspend|resume`), the payload of the local
// command PowerCommand.
const (
	// PowerCommand is the name of the local command (gossip.HandleLocal).
	PowerCommand = "power"
	// PowerSuspend: the machine is about to sleep.
	PowerSuspend = "suspend"
	// PowerResume: the machine woke up.
	PowerResume = "resume"
)

// ErrBadPowerCommand is returned for a power command other than suspend or
// resume.
var ErrBadPowerCommand = errors.New("power command must be suspend or resume")

// handlePower answers the local power command.
func (n *Node) handlePower(payload []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.LeaveTimeout)
	defer cancel()
	switch cmd := strings.TrimSpace(string(payload)); cmd {
	case PowerSuspend:
		if err := n.Suspend(ctx); err != nil {
			return nil, err
		}
		return []byte("asleep: the cluster places no work here until resume"), nil
	case PowerResume:
		contacted, err := n.Resume(ctx)
		if err != nil {
			return nil, err
		}
		return fmt.Appendf(nil, "awake: fresh sample gossiped, %d members contacted", contacted), nil
	default:
		return nil, fmt.Errorf("%w, not %q", ErrBadPowerCommand, cmd)
	}
}

// Suspend tells the cluster at once that this machine is about to sleep
// (tag pw=s): the leader records it asleep, places no work on it and runs
// no suspicion clock while it is silent. Call it before the machine
// suspends (the sleep hook, logind's PrepareForSleep).
//
// Work already running here follows -owner-action, as when the owner
// sits down: suspend stops it (the machine is about to stop it anyway),
// requeue hands it back to the leader uncounted, finish lets it be; and
// nothing new starts until Resume.
func (n *Node) Suspend(ctx context.Context) error {
	n.mu.Lock()
	was := n.asleep
	n.asleep = true
	n.mu.Unlock()
	if !was {
		n.logger.Info("going to sleep: telling the cluster")
		if n.runner != nil {
			if k, err := n.runner.OwnerActive(n.cfg.Owner.Action); err != nil {
				n.logger.Warn("could not apply -owner-action before sleep", "err", err)
			} else if k > 0 {
				n.logger.Info("running work follows -owner-action before sleep", "action", n.cfg.Owner.Action, "items", k)
			}
		}
	}
	return n.heartbeat(ctx)
}

// Resume clears the asleep mark, samples at once and gossips the fresh
// sample, then exchanges state with a few known members (gossip.Rejoin),
// so that the others, who may have declared this node dead while it slept,
// see it alive within a gossip round. It returns how many members
// answered.
func (n *Node) Resume(ctx context.Context) (int, error) {
	n.mu.Lock()
	was := n.asleep
	n.asleep = false
	ownerActive := n.ownerState == string(owner.StateActive)
	n.mu.Unlock()
	n.logger.Info("awake: re-sampling and rejoining")
	if was && n.runner != nil && !ownerActive {
		// Work held for the sleep goes on, unless the owner (who may have
		// woken the machine) is at the keyboard: then the owner watcher
		// releases it when they leave.
		n.runner.OwnerIdle()
	}
	err := n.heartbeat(ctx)
	contacted, jerr := n.gossip.Rejoin()
	if jerr != nil && contacted == 0 {
		n.logger.Warn("rejoin after resume found no member; serf keeps trying", "err", jerr)
	}
	return contacted, err
}

// watchLogind follows logind's PrepareForSleep until the node stops:
// Suspend before the machine sleeps (logind waits for it, up to its
// InhibitDelayMaxSec), Resume after. It returns at once, with a log line,
// when logind is not there.
func (n *Node) watchLogind() {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	w := owner.NewSleepWatcher(owner.SleepConfig{Address: n.cfg.Power.LogindAddress})
	err := w.Run(ctx, func(ctx context.Context) {
		if err := n.Suspend(ctx); err != nil {
			n.logger.Warn("announcing the suspend failed", "err", err)
		}
	}, func(ctx context.Context) {
		if _, err := n.Resume(ctx); err != nil {
			n.logger.Warn("announcing the wake failed", "err", err)
		}
	})
	if err != nil {
		n.logger.Info("not following logind's PrepareForSleep; suspends are announced by the sleep hook only", "err", err)
	}
}

// detectMAC finds the hardware address of the interface that holds ip;
// "" when none does or it has no 6-byte address (loopback).
func detectMAC(ip net.IP) string {
	ifaces, err := net.Interfaces()
	if err != nil || ip == nil {
		return ""
	}
	for _, ifc := range ifaces {
		if len(ifc.HardwareAddr) != 6 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.Equal(ip) {
				return ifc.HardwareAddr.String()
			}
		}
	}
	return ""
}
