package sim

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// Desktops whose updates are blocked (serf's SetTags waiting for its
// broadcast, up to BroadcastTimeout) hold up neither the driver nor
// another desktop's update, however many they are (a fixed pool of 256
// workers held up everyone behind 256 such waits), and each desktop's
// updates are applied in the order sent.
func TestUpdatePool_BlockedDesktopsHoldUpNoOther(t *testing.T) {
	const blocked = 300
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	defer unblock() // a failed test leaves no goroutine blocked
	var mu sync.Mutex
	applied := map[string][]int{}
	zApplied := make(chan struct{})
	p := newUpdatePool(func(u tagUpdate) {
		if u.name != "z" && u.seq == 1 {
			<-release
		}
		mu.Lock()
		applied[u.name] = append(applied[u.name], u.seq)
		mu.Unlock()
		if u.name == "z" {
			close(zApplied)
		}
	})
	sent := make(chan struct{})
	go func() {
		for i := range blocked {
			p.send(tagUpdate{name: fmt.Sprint("b", i), seq: 1})
			p.send(tagUpdate{name: fmt.Sprint("b", i), seq: 2})
		}
		p.send(tagUpdate{name: "z", seq: 1})
		close(sent)
	}()
	select {
	case <-zApplied:
	case <-time.After(10 * time.Second):
		t.Fatalf("desktop z's update not applied within 10 s behind %d blocked desktops", blocked)
	}
	mu.Lock()
	n := len(applied)
	mu.Unlock()
	if n != 1 {
		t.Fatalf("%d desktops' updates applied while theirs were blocked", n-1)
	}
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("the driver is still sending 10 s after desktop z's update was applied")
	}
	unblock()
	p.close()
	for i := range blocked {
		if got := applied[fmt.Sprint("b", i)]; !slices.Equal(got, []int{1, 2}) {
			t.Fatalf("desktop b%d's updates applied as %v, want [1 2]", i, got)
		}
	}
}
