package logging

import (
	"fmt"
	"testing"
	"time"
)

func TestLimiter_OncePerIntervalPerKeyCountingTheRest(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLimiter(time.Minute, 100, func() time.Time { return now })
	if ok, held := l.Allow("a"); !ok || held != 0 {
		t.Fatalf("first line of a: %v, %d held; want through, 0", ok, held)
	}
	for range 5 {
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("a second line of a within the minute went through")
		}
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key was held back by a's lines")
	}
	now = now.Add(time.Minute)
	if ok, held := l.Allow("a"); !ok || held != 5 {
		t.Fatalf("a a minute later: %v, %d held; want through, saying 5 were held back", ok, held)
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("the limit did not start again")
	}
}

// A flood of distinct keys costs bounded memory.
func TestLimiter_Bounded(t *testing.T) {
	l := NewLimiter(time.Minute, 10, nil)
	for i := range 1000 {
		if ok, _ := l.Allow(fmt.Sprint(i)); !ok {
			t.Fatalf("key %d, never seen, held back", i)
		}
	}
	if n := len(l.keys); n > 10 {
		t.Fatalf("%d keys remembered, want at most 10", n)
	}
}
