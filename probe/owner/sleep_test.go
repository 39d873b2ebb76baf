package owner

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/chiffon-dev/chiffon/internal/testwait"
)

// fakeSleepLogind is the part of org.freedesktop.login1.Manager a
// SleepWatcher uses: Inhibit, and the PrepareForSleep signal.
type fakeSleepLogind struct {
	conn *dbus.Conn

	mu     sync.Mutex // guards locks and pipes
	locks  []string   // "what/who/mode" of each Inhibit call
	pipes  []*os.File // the ends the fake keeps
	refuse bool
}

// Inhibit is Manager.Inhibit: it hands out one end of a pipe.
func (f *fakeSleepLogind) Inhibit(what, who, why, mode string) (dbus.UnixFD, *dbus.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse {
		return 0, dbus.NewError("org.freedesktop.DBus.Error.AccessDenied", []any{"no"})
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, dbus.MakeFailedError(err)
	}
	f.locks = append(f.locks, what+"/"+who+"/"+mode)
	f.pipes = append(f.pipes, r, w)
	return dbus.UnixFD(w.Fd()), nil
}

func (f *fakeSleepLogind) lockCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.locks...)
}

func (f *fakeSleepLogind) prepareForSleep(t *testing.T, sleeping bool) {
	t.Helper()
	if err := f.conn.Emit(logindPath, logindManager+".PrepareForSleep", sleeping); err != nil {
		t.Fatal(err)
	}
}

func startFakeSleepLogind(t *testing.T, bus *privateBus) *fakeSleepLogind {
	t.Helper()
	conn, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSleepLogind{conn: conn}
	t.Cleanup(func() {
		conn.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, p := range f.pipes {
			p.Close()
		}
	})
	if err := conn.Export(f, logindPath, logindManager); err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.RequestName(logindBusName, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("fake logind: RequestName = %v, %v", reply, err)
	}
	return f
}

// TestSleepWatcher_BeforeAndAfterSleep: the watcher holds a delay lock on
// sleep while awake; PrepareForSleep(true) runs before and then releases
// the lock; PrepareForSleep(false) takes a new lock and runs after.
func TestSleepWatcher_BeforeAndAfterSleep(t *testing.T) {
	bus := startBus(t, "")
	f := startFakeSleepLogind(t, bus)
	w := NewSleepWatcher(SleepConfig{Address: bus.Address})
	var (
		mu     sync.Mutex
		events []string
	)
	record := func(e string) func(context.Context) {
		return func(context.Context) {
			mu.Lock()
			defer mu.Unlock()
			// The lock must still be held while before runs.
			if e == "before" && !w.holding() {
				e = "before-without-lock"
			}
			events = append(events, e)
		}
	}
	seen := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), events...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, record("before"), record("after")) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	testwait.Until(t, 10*time.Second, "a delay lock on sleep", func() (bool, string) {
		c := f.lockCalls()
		return len(c) == 1 && c[0] == "sleep/chiffon/delay" && w.holding(), ""
	})

	f.prepareForSleep(t, true)
	testwait.Until(t, 10*time.Second, "before, then the lock released", func() (bool, string) {
		e := seen()
		return len(e) == 1 && !w.holding(), ""
	})
	if e := seen(); e[0] != "before" {
		t.Fatalf("events %v, want before with the lock held", e)
	}
	f.prepareForSleep(t, false)
	testwait.Until(t, 10*time.Second, "after, with a new lock", func() (bool, string) {
		e := seen()
		return len(e) == 2 && e[1] == "after" && len(f.lockCalls()) == 2 && w.holding(), ""
	})
}

// TestSleepWatcher_NoLogindOrRefused: Run fails at once without logind
// on the bus, or when logind refuses the lock.
func TestSleepWatcher_NoLogindOrRefused(t *testing.T) {
	bus := startBus(t, "")
	nop := func(context.Context) {}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := NewSleepWatcher(SleepConfig{Address: bus.Address}).Run(ctx, nop, nop); err == nil {
		t.Fatal("Run without logind: no error")
	}
	f := startFakeSleepLogind(t, bus)
	f.mu.Lock()
	f.refuse = true
	f.mu.Unlock()
	if err := NewSleepWatcher(SleepConfig{Address: bus.Address}).Run(ctx, nop, nop); err == nil {
		t.Fatal("Run with the lock refused: no error")
	}
}
