package gossip

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics/compat"

	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/probe"
)

// sentSink counts the bytes memberlist reports sent (its
// memberlist.udp.sent and memberlist.tcp.sent counters); everything else
// is dropped.
type sentSink struct{ udp, tcp atomic.Int64 }

func (s *sentSink) IncrCounterWithLabels(key []string, val float32, _ []metrics.Label) {
	if len(key) >= 3 && slices.Equal(key[len(key)-3:], []string{"memberlist", "udp", "sent"}) {
		s.udp.Add(int64(val))
	}
	if len(key) >= 3 && slices.Equal(key[len(key)-3:], []string{"memberlist", "tcp", "sent"}) {
		s.tcp.Add(int64(val))
	}
}
func (s *sentSink) IncrCounter(key []string, val float32)                          { s.IncrCounterWithLabels(key, val, nil) }
func (s *sentSink) SetGauge([]string, float32)                                     {}
func (s *sentSink) SetGaugeWithLabels([]string, float32, []metrics.Label)          {}
func (s *sentSink) SetPrecisionGauge([]string, float64)                            {}
func (s *sentSink) SetPrecisionGaugeWithLabels([]string, float64, []metrics.Label) {}
func (s *sentSink) EmitKey([]string, float32)                                      {}
func (s *sentSink) AddSample([]string, float32)                                    {}
func (s *sentSink) AddSampleWithLabels([]string, float32, []metrics.Label)         {}

// BenchmarkGossip_TrafficPerNode runs N desktops in one process on
// loopback with the default SWIM timings (probe every 1 s, gossip every
// 200 ms, push-pull every 30 s scaled up past 32 nodes), every desktop's
// tags changing once per 30 s heartbeat (staggered), and reports the
// gossip bytes memberlist sent per node per second and in all, over a
// window of GOSSIP_TRAFFIC_WINDOW (60s: two push-pull periods at
// N ≤ 32). For docs/ARCHITECTURE.md, Scale. Run with -benchtime=1x; the
// node counts come from GOSSIP_TRAFFIC_NODES ("8 32 64"), without which it
// is skipped (it takes a minute per size).
func BenchmarkGossip_TrafficPerNode(b *testing.B) {
	window := 60 * time.Second
	if v := os.Getenv("GOSSIP_TRAFFIC_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		window = d
	}
	v := os.Getenv("GOSSIP_TRAFFIC_NODES")
	if v == "" {
		// A minute per size: not part of `make bench` unless asked for.
		b.Skip(`set GOSSIP_TRAFFIC_NODES (e.g. "8 32 64") to run it`)
	}
	var sizes []int
	for _, f := range strings.Fields(v) {
		n, err := strconv.Atoi(f)
		if err != nil {
			b.Fatalf("GOSSIP_TRAFFIC_NODES: %v", err)
		}
		sizes = append(sizes, n)
	}
	sink := &sentSink{}
	conf := metrics.DefaultConfig("bench")
	conf.EnableHostname, conf.EnableRuntimeMetrics = false, false
	if _, err := metrics.NewGlobal(conf, sink); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { metrics.NewGlobal(conf, &metrics.BlackholeSink{}) })
	for _, n := range sizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := make([]*Gossip, n)
			info := func(i int, load float64) NodeInfo {
				return NodeInfo{AgentID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Roles: []string{RoleDesktop},
					Sample: probe.Sample{CPULoad1: load, CPUCoresPhysical: 16, CPUCoresAvailable: probe.AvailableCores(16, load),
						MemoryAvailableGB: 30, GPUType: "nvidia", GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: 20,
						GPUs: []probe.GPU{{Name: "NVIDIA GeForce RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: 20, UtilizationPct: 10}}}}
			}
			for i := range nodes {
				c := DefaultConfig()
				c.NodeName = fmt.Sprintf("d%03d", i)
				c.DataDir = b.TempDir()
				c.BindAddr, c.RPCAddr = "127.0.0.1:0", ""
				c.Logger = slog.New(slog.DiscardHandler)
				tags, err := EncodeTags(nil, info(i, 1))
				if err != nil {
					b.Fatal(err)
				}
				c.Tags = tags
				if i > 0 {
					c.Join = []string{nodes[0].Serf().LocalMember().Addr.String() + ":" + fmt.Sprint(nodes[0].Serf().LocalMember().Port)}
				}
				g, err := New(c)
				if err != nil {
					b.Fatal(err)
				}
				if err := g.Start(context.Background()); err != nil {
					b.Fatalf("start %s: %v", c.NodeName, err)
				}
				b.Cleanup(func() { g.Close() })
				nodes[i] = g
			}
			testwait.Until(b, 2*time.Minute, "every node to see every node alive", func() (bool, string) {
				for _, g := range nodes {
					if g.Serf().NumNodes() < n {
						return false, fmt.Sprintf("%s sees %d", g.Serf().LocalMember().Name, g.Serf().NumNodes())
					}
				}
				return true, ""
			})
			// Heartbeats: each desktop's tags change once per 30 s,
			// staggered over the period.
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				tick := time.NewTicker(30 * time.Second / time.Duration(n))
				defer tick.Stop()
				for beat := 0; ; beat++ {
					select {
					case <-stop:
						return
					case <-tick.C:
						i := beat % n
						_, _ = nodes[i].UpdateInfo(info(i, 1+float64(beat%100)/10))
					}
				}
			}()
			sink.udp.Store(0)
			sink.tcp.Store(0)
			began := time.Now()
			time.Sleep(window) // the measurement window, not a wait for a condition
			udp, tcp, took := sink.udp.Load(), sink.tcp.Load(), time.Since(began).Seconds()
			close(stop)
			<-done
			perNode := float64(udp+tcp) / took / float64(n)
			b.ReportMetric(perNode, "bytes/s/node")
			b.ReportMetric(float64(udp)/took/float64(n), "udp-bytes/s/node")
			b.ReportMetric(float64(tcp)/took/float64(n), "tcp-bytes/s/node")
			b.ReportMetric(perNode*float64(n), "bytes/s-total")
		})
	}
}
