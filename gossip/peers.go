package gossip

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/serf/serf"
)

// peersFile remembers the addresses of members last seen alive, so that a
// node that crashed or lost power rejoins on restart without -join. serf's
// own snapshot does this after a clean stop, but it buffers writes for up to
// half a second and only flushes on the next event, so after a kill -9 it
// often holds nothing but the node itself.
const peersFile = "peers.json"

// peersInterval is how often the list is checked even without a member
// event (events trigger a check at once, see peersChanged).
const peersInterval = time.Second

// alivePeers lists the gossip addresses of the other alive members, sorted.
func (g *Gossip) alivePeers() []string {
	self := g.agent.Serf().LocalMember().Name
	var out []string
	for _, m := range g.agent.Serf().Members() {
		if m.Name != self && m.Status == serf.StatusAlive {
			out = append(out, net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))))
		}
	}
	slices.Sort(out)
	return out
}

// savePeers keeps peers.json current until Close.
func (g *Gossip) savePeers() {
	defer g.wg.Done()
	path := filepath.Join(g.cfg.DataDir, "serf", peersFile)
	var last []string
	t := time.NewTicker(peersInterval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		case <-g.peersDirty:
		}
		peers := g.alivePeers()
		if len(peers) == 0 || slices.Equal(peers, last) {
			continue
		}
		b, _ := json.Marshal(peers)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, path)
		}
		last = peers
	}
}

// loadPeers reads the addresses saved by a previous run.
func (g *Gossip) loadPeers() []string {
	b, err := os.ReadFile(filepath.Join(g.cfg.DataDir, "serf", peersFile))
	if err != nil {
		return nil
	}
	var peers []string
	if json.Unmarshal(b, &peers) != nil {
		g.logger.Warn("ignoring unreadable peers file", "path", filepath.Join(g.cfg.DataDir, "serf", peersFile))
		return nil
	}
	return peers
}

// peersChanged asks savePeers to look again now; it never blocks, so serf's
// event loop can call it.
func (g *Gossip) peersChanged() {
	select {
	case g.peersDirty <- struct{}{}:
	default:
	}
}
