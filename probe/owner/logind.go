package owner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
)

// systemd-logind's D-Bus names (org.freedesktop.login1(5)).
const (
	logindBusName    = "org.freedesktop.login1"
	logindPath       = dbus.ObjectPath("/org/freedesktop/login1")
	logindManager    = "org.freedesktop.login1.Manager"
	logindSession    = "org.freedesktop.login1.Session"
	dbusProperties   = "org.freedesktop.DBus.Properties"
	errServiceAbsent = "org.freedesktop.DBus.Error.ServiceUnknown"
)

// LogindConfig configures a Logind source.
type LogindConfig struct {
	// Address is the D-Bus address of the bus logind is on; "" means the
	// system bus (DBUS_SYSTEM_BUS_ADDRESS, else /run/dbus/system_bus_socket).
	// Tests point it at a private bus.
	Address string

	// Now is the clock; nil means time.Now. IdleSinceHint is wall-clock
	// time (CLOCK_REALTIME), so this must be a wall clock too.
	Now func() time.Time
}

// Logind reads the owner's idle time from systemd-logind: the IdleHint and
// IdleSinceHint of the sessions that are graphical (Type x11, wayland or
// mir), belong to a user (Class "user", so not a display manager's
// greeter) and are active (in the foreground of their seat). The desktop
// environment sets a session's IdleHint after its own idle delay (GNOME's
// "blank screen" delay, KDE's idle time), so the idle time this source
// reports is the time since then, not since the last key press.
//
// It connects on the first Read and keeps the connection; a lost
// connection is dropped and the next Read connects again.
type Logind struct {
	cfg LogindConfig

	mu     sync.Mutex // guards conn, cancel and closed
	conn   *dbus.Conn
	cancel context.CancelFunc // ends conn's context; set with conn
	closed bool
}

var _ Source = (*Logind)(nil)

// NewLogind returns a logind source. It opens nothing until Read.
func NewLogind(cfg LogindConfig) *Logind {
	return &Logind{cfg: cfg}
}

// Name is "logind".
func (l *Logind) Name() string { return "logind" }

// logindSessionEntry is one element of Manager.ListSessions' a(susso).
type logindSessionEntry struct {
	ID   string
	UID  uint32
	User string
	Seat string
	Path dbus.ObjectPath
}

// sessionState is what Read needs of one session's properties.
type sessionState struct {
	graphical, user, active bool
	idle                    bool
	idleSince               uint64 // µs since the Unix epoch, CLOCK_REALTIME
}

// Read lists logind's sessions and reads the properties of each. Any
// active graphical user session that is not idle makes the owner active
// (Idle 0); when all of them are idle, the most recent IdleSinceHint
// counts. Without such a session, or without logind on the bus, it returns
// ErrNoData.
func (l *Logind) Read(ctx context.Context) (Reading, error) {
	conn, err := l.connection(ctx)
	if err != nil {
		return Reading{}, err
	}
	var entries []logindSessionEntry
	err = conn.Object(logindBusName, logindPath).CallWithContext(ctx, logindManager+".ListSessions", 0).Store(&entries)
	if err != nil {
		l.dropIfLost(conn)
		var de dbus.Error
		if errors.As(err, &de) && de.Name == errServiceAbsent {
			return Reading{}, fmt.Errorf("%w: logind is not on the bus: %w", ErrNoData, err)
		}
		return Reading{}, fmt.Errorf("logind ListSessions: %w", err)
	}

	var (
		errs        []error
		candidates  int
		active      bool
		newestSince uint64
	)
	for _, e := range entries {
		st, err := readSession(ctx, conn, e.Path)
		if err != nil { // a session that ended since the list, most often
			errs = append(errs, fmt.Errorf("logind session %s: %w", e.ID, err))
			continue
		}
		if !st.graphical || !st.user || !st.active {
			continue
		}
		candidates++
		if !st.idle {
			active = true
		} else if st.idleSince > newestSince {
			newestSince = st.idleSince
		}
	}
	now := nowOf(l.cfg.Now)
	switch {
	case active:
		return Reading{Source: l.Name(), LastInput: now}, nil
	case candidates > 0 && newestSince > 0:
		since := time.UnixMicro(int64(newestSince))
		return Reading{Source: l.Name(), Idle: idleSince(now, since), LastInput: since}, nil
	case candidates > 0:
		errs = append(errs, fmt.Errorf("%w: idle graphical sessions without an IdleSinceHint", ErrNoData))
	default:
		errs = append(errs, fmt.Errorf("%w: no active graphical user session among %d", ErrNoData, len(entries)))
	}
	return Reading{}, errors.Join(errs...)
}

// readSession reads the properties Read needs of the session at path, in
// one GetAll.
func readSession(ctx context.Context, conn *dbus.Conn, path dbus.ObjectPath) (sessionState, error) {
	var props map[string]dbus.Variant
	err := conn.Object(logindBusName, path).CallWithContext(ctx, dbusProperties+".GetAll", 0, logindSession).Store(&props)
	if err != nil {
		return sessionState{}, err
	}
	var (
		st         sessionState
		typ, class string
		errs       []error
		get        = func(name string, into any) { errs = append(errs, storeProp(props, name, into)) }
	)
	get("Type", &typ)
	get("Class", &class)
	get("Active", &st.active)
	get("IdleHint", &st.idle)
	get("IdleSinceHint", &st.idleSince)
	if err := errors.Join(errs...); err != nil {
		return sessionState{}, err
	}
	st.graphical = typ == "x11" || typ == "wayland" || typ == "mir"
	st.user = class == "user"
	return st, nil
}

// storeProp stores the property name of props into the pointer into,
// failing when it is missing or of another D-Bus type.
func storeProp(props map[string]dbus.Variant, name string, into any) error {
	v, ok := props[name]
	if !ok {
		return fmt.Errorf("no property %s", name)
	}
	if err := v.Store(into); err != nil {
		return fmt.Errorf("property %s: %w", name, err)
	}
	return nil
}

// connection returns the held connection, connecting first when there is
// none. Connecting waits at most until ctx is done: a bus that accepts the
// connection and then never answers must not hold up the caller (godbus's
// handshake takes no context, so ctx's end closes the half-made
// connection instead).
func (l *Logind) connection(ctx context.Context) (*dbus.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if l.conn != nil {
		return l.conn, nil
	}
	connCtx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	var (
		conn *dbus.Conn
		err  error
	)
	if l.cfg.Address == "" {
		conn, err = dbus.ConnectSystemBus(dbus.WithContext(connCtx))
	} else {
		conn, err = dbus.Connect(l.cfg.Address, dbus.WithContext(connCtx))
	}
	if !stop() { // ctx ended while connecting
		if err == nil {
			_ = conn.Close()
		}
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("connect to logind's bus: %w", err)
	}
	l.conn, l.cancel = conn, cancel
	return conn, nil
}

// dropIfLost forgets conn when it is no longer connected, so that the next
// Read connects again (the bus restarted, say).
func (l *Logind) dropIfLost(conn *dbus.Conn) {
	if conn.Connected() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == conn {
		l.conn = nil
		l.cancel()
	}
	_ = conn.Close()
}

// Close closes the bus connection. It is idempotent; Read after Close
// returns ErrClosed.
func (l *Logind) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.conn == nil {
		return nil
	}
	err := l.conn.Close()
	l.cancel()
	l.conn = nil
	return err
}
