package owner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/godbus/dbus/v5"
)

// SleepConfig configures a SleepWatcher.
type SleepConfig struct {
	// Address is the D-Bus address of the bus logind is on; "" means the
	// system bus. Tests point it at a private bus.
	Address string
	// Who and Why label the inhibitor lock (`systemd-inhibit --list`
	// shows them).
	Who, Why string
}

// SleepWatcher follows logind's PrepareForSleep signal so that the node
// can tell the cluster before the machine suspends. While the machine is
// awake it holds a *delay* inhibitor lock (Manager.Inhibit "sleep",
// mode "delay"): logind then waits, up to its InhibitDelayMaxSec (5 s by
// default), for the lock to be released before it suspends. On
// PrepareForSleep(true) the watcher runs the caller's before function and
// only then releases the lock; on PrepareForSleep(false), after the wake,
// it takes a new lock and runs after.
//
// It needs the system bus and permission to take a delay lock on sleep
// (polkit's org.freedesktop.login1.inhibit-delay-sleep, granted to root
// and, by default, to local users).
type SleepWatcher struct {
	cfg SleepConfig

	mu   sync.Mutex // guards lock
	lock *os.File   // the delay lock's file descriptor; nil while released
}

// NewSleepWatcher returns a watcher; it opens nothing until Run.
func NewSleepWatcher(cfg SleepConfig) *SleepWatcher {
	if cfg.Who == "" {
		cfg.Who = "chiffon"
	}
	if cfg.Why == "" {
		cfg.Why = "tell the cluster this desktop is going to sleep"
	}
	return &SleepWatcher{cfg: cfg}
}

// Run connects to the bus, takes the delay lock and follows
// PrepareForSleep until ctx ends (nil) or the bus is lost (an error).
// before and after run on Run's goroutine, before and after each sleep;
// each is given a context that ends with ctx. Run fails at once when there
// is no logind on the bus or the lock is refused.
func (w *SleepWatcher) Run(ctx context.Context, before, after func(context.Context)) error {
	var (
		conn *dbus.Conn
		err  error
	)
	if w.cfg.Address == "" {
		conn, err = dbus.ConnectSystemBus(dbus.WithContext(ctx))
	} else {
		conn, err = dbus.Connect(w.cfg.Address, dbus.WithContext(ctx))
	}
	if err != nil {
		return fmt.Errorf("connect to logind's bus: %w", err)
	}
	defer conn.Close()
	defer w.release()
	if err := conn.AddMatchSignalContext(ctx, dbus.WithMatchObjectPath(logindPath),
		dbus.WithMatchInterface(logindManager), dbus.WithMatchMember("PrepareForSleep")); err != nil {
		return fmt.Errorf("subscribe to PrepareForSleep: %w", err)
	}
	signals := make(chan *dbus.Signal, 16)
	conn.Signal(signals)
	defer conn.RemoveSignal(signals)
	if err := w.inhibit(ctx, conn); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case s, ok := <-signals:
			if !ok {
				return fmt.Errorf("logind's bus: connection lost")
			}
			if s.Name != logindManager+".PrepareForSleep" || len(s.Body) != 1 {
				continue
			}
			sleeping, ok := s.Body[0].(bool)
			if !ok {
				continue
			}
			if sleeping {
				before(ctx)
				w.release() // now logind may suspend
				continue
			}
			// Awake: hold a lock again for the next sleep, then report.
			err := w.inhibit(ctx, conn)
			after(ctx)
			if err != nil {
				return err
			}
		}
	}
}

// inhibit takes the delay lock (if none is held).
func (w *SleepWatcher) inhibit(ctx context.Context, conn *dbus.Conn) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lock != nil {
		return nil
	}
	var fd dbus.UnixFD
	err := conn.Object(logindBusName, logindPath).CallWithContext(ctx, logindManager+".Inhibit", 0,
		"sleep", w.cfg.Who, w.cfg.Why, "delay").Store(&fd)
	if err != nil {
		var de dbus.Error
		if errors.As(err, &de) && de.Name == errServiceAbsent {
			return fmt.Errorf("%w: logind is not on the bus: %w", ErrNoData, err)
		}
		return fmt.Errorf("logind Inhibit(sleep, delay): %w", err)
	}
	w.lock = os.NewFile(uintptr(fd), "logind-delay-lock")
	return nil
}

// release closes the delay lock, if held.
func (w *SleepWatcher) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lock != nil {
		_ = w.lock.Close()
		w.lock = nil
	}
}

// holding reports whether the delay lock is held (tests).
func (w *SleepWatcher) holding() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lock != nil
}
