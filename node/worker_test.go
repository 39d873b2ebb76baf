package node

import (
	"testing"

	"github.com/chiffon-dev/chiffon/gossip"
)

// TestWorkAddrs_FollowGossip: without -work-addr a desktop takes work on its
// gossip bind IP, port 7380, advertised with the -advertise IP when there
// is one; a given -work-addr is used as it is (-advertise names the host
// only of one on every interface).
func TestWorkAddrs_FollowGossip(t *testing.T) {
	for name, tc := range map[string]struct {
		addr, bind, advertise string
		listen, advHost       string
	}{
		"loopback bind":          {bind: "127.0.0.2:7946", listen: "127.0.0.2:7380"},
		"LAN bind":               {bind: "10.0.0.20:7946", listen: "10.0.0.20:7380"},
		"every interface":        {bind: "0.0.0.0:7946", listen: "0.0.0.0:7380"},
		"no bind IP":             {bind: ":7946", listen: "0.0.0.0:7380"},
		"default gossip config":  {bind: gossip.DefaultConfig().BindAddr, listen: "0.0.0.0:7380"},
		"advertise":              {bind: "0.0.0.0:7946", advertise: "192.0.2.7:17946", listen: "0.0.0.0:7380", advHost: "192.0.2.7"},
		"IPv6 bind":              {bind: "[fd00::5]:7946", listen: "[fd00::5]:7380"},
		"explicit -work-addr":    {addr: "127.0.0.9:9000", bind: "10.0.0.20:7946", listen: "127.0.0.9:9000"},
		"explicit and advertise": {addr: "0.0.0.0:9000", bind: "10.0.0.20:7946", advertise: "192.0.2.7:7946", listen: "0.0.0.0:9000", advHost: "192.0.2.7"},
		"explicit IP, advertise": {addr: "10.0.0.21:9000", bind: "10.0.0.20:7946", advertise: "192.0.2.7:7946", listen: "10.0.0.21:9000"},
		"LAN bind, advertise":    {bind: "10.0.0.20:7946", advertise: "192.0.2.7:7946", listen: "10.0.0.20:7380", advHost: "192.0.2.7"},
	} {
		t.Run(name, func(t *testing.T) {
			g := gossip.DefaultConfig()
			g.BindAddr, g.AdvertiseAddr = tc.bind, tc.advertise
			listen, adv := workAddrs(tc.addr, g)
			if listen != tc.listen || adv != tc.advHost {
				t.Errorf("workAddrs(%q, bind %q, advertise %q) = %q, %q; want %q, %q",
					tc.addr, tc.bind, tc.advertise, listen, adv, tc.listen, tc.advHost)
			}
		})
	}
	if d := DefaultWorkConfig(); d.Addr != "" {
		t.Errorf("DefaultWorkConfig().Addr = %q; want empty (follow -bind)", d.Addr)
	}
}
