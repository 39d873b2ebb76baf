package dispatch

import (
	"bytes"
	"context"
	"net"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/consensus"
)

// asleep is desk(...) gone to sleep, with a MAC address.
func asleep(id, mac string, freeVRAM ...float64) consensus.Record {
	return with(desk(id, 8, freeVRAM...), func(r *consensus.Record) { r.Status, r.MAC = consensus.StatusAsleep, mac })
}

// TestWakes: which asleep nodes the leader wakes for which pending work.
func TestWakes(t *testing.T) {
	const macA, macB, macC = "0a:00:00:00:00:0a", "0a:00:00:00:00:0b", "0a:00:00:00:00:0c"
	cfg := WakeConfig{Broadcast: "127.0.0.1:9", Timeout: 3 * time.Minute, MaxPerMinute: 2}
	woken := func(r consensus.Record, ago time.Duration) consensus.Record {
		return with(r, func(r *consensus.Record) { r.WakeSentAt = t0.Add(-ago) })
	}
	type wake struct {
		agent string
		work  []string
	}
	tests := []struct {
		name  string
		cfg   *WakeConfig
		nodes []consensus.Record
		items []consensus.WorkItem
		want  []wake
	}{
		{"fits only an asleep node", nil,
			[]consensus.Record{desk("awake", 8, 4), asleep("a", macA, 20)},
			[]consensus.WorkItem{pending("w1", 16, 1)},
			[]wake{{"a", []string{"w1"}}}},
		{"fits an awake node: no wake", nil,
			[]consensus.Record{desk("awake", 8, 20), asleep("a", macA, 20)},
			[]consensus.WorkItem{pending("w1", 16, 1)}, nil},
		{"asleep and unreachable (it slept with work on it): woken all the same", nil,
			[]consensus.Record{with(asleep("a", macA, 20), func(r *consensus.Record) { r.UnreachableSince = t0.Add(-time.Minute) })},
			[]consensus.WorkItem{pending("w1", 16, 1)},
			[]wake{{"a", []string{"w1"}}}},
		{"no MAC: cannot be woken", nil,
			[]consensus.Record{asleep("a", "", 20)},
			[]consensus.WorkItem{pending("w1", 16, 1)}, nil},
		{"fits no node, asleep or not", nil,
			[]consensus.Record{asleep("a", macA, 8)},
			[]consensus.WorkItem{pending("w1", 16, 1)}, nil},
		{"two items, one node: one packet for both", nil,
			[]consensus.Record{asleep("a", macA, 20, 20)},
			[]consensus.WorkItem{pending("w1", 16, 1), pending("w2", 16, 1)},
			[]wake{{"a", []string{"w1", "w2"}}}},
		{"the second item no longer fits the first node: a second node", nil,
			[]consensus.Record{asleep("a", macA, 20), asleep("b", macB, 20)},
			[]consensus.WorkItem{pending("w1", 16, 1), pending("w2", 16, 1)},
			[]wake{{"a", []string{"w1"}}, {"b", []string{"w2"}}}},
		{"already being woken: wait for it", nil,
			[]consensus.Record{woken(asleep("a", macA, 20), time.Minute), asleep("b", macB, 20)},
			[]consensus.WorkItem{pending("w1", 16, 1)}, nil},
		{"woken longer than the timeout ago: again", nil,
			[]consensus.Record{woken(asleep("a", macA, 20), 3*time.Minute)},
			[]consensus.WorkItem{pending("w1", 16, 1)},
			[]wake{{"a", []string{"w1"}}}},
		{"cluster-wide limit: two per minute, one already spent", nil,
			[]consensus.Record{woken(desk("up", 8), 30*time.Second), asleep("a", macA, 20), asleep("b", macB, 20), asleep("c", macC, 20)},
			[]consensus.WorkItem{pending("w1", 16, 1), pending("w2", 16, 1), pending("w3", 16, 1)},
			[]wake{{"a", []string{"w1"}}}},
		{"past its deadline or out of attempts: no wake", nil,
			[]consensus.Record{asleep("a", macA, 20)},
			[]consensus.WorkItem{with2(pending("late", 16, 1), func(w *consensus.WorkItem) { w.Deadline = t0 }),
				with2(pending("spent", 16, 1), func(w *consensus.WorkItem) { w.Attempts = 3 })}, nil},
		{"pinned elsewhere: no wake", nil,
			[]consensus.Record{asleep("a", macA, 20)},
			[]consensus.WorkItem{with2(pending("w1", 16, 1), func(w *consensus.WorkItem) { w.PinAgentID = "z" })}, nil},
		{"waking off", &WakeConfig{Timeout: time.Minute, MaxPerMinute: 2},
			[]consensus.Record{asleep("a", macA, 20)},
			[]consensus.WorkItem{pending("w1", 16, 1)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			if tt.cfg != nil {
				c = *tt.cfg
			}
			var got []wake
			for _, w := range Wakes(t0, tt.nodes, tt.items, c) {
				if !w.At.Equal(t0) || w.MAC == "" {
					t.Errorf("wake %+v: want At %v and a MAC", w, t0)
				}
				got = append(got, wake{w.AgentID, w.WorkIDs})
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("wakes = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestSendMagicPacket: one datagram of 6×0xFF and 16× the MAC reaches a
// UDP listener.
func TestSendMagicPacket(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	mac, _ := net.ParseMAC("0a:1b:2c:3d:4e:5f")
	if err := SendMagicPacket(context.Background(), pc.LocalAddr().String(), mac); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{0xff}, 6), bytes.Repeat([]byte(mac), 16)...)
	if got := buf[:n]; !slices.Equal(got, want) {
		t.Fatalf("packet = % x, want % x", got, want)
	}
}
