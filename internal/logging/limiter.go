package logging

import (
	"sync"
	"time"
)

// Limiter lets a log line through at most once per Every for each key
// (a remote host and a reason, a node name) and counts the lines it
// holds back, so that whoever can reach a port cannot flood the log with
// refusals. The zero value is not usable; NewLimiter makes one. Safe for
// concurrent use.
type Limiter struct {
	every time.Duration
	max   int
	now   func() time.Time

	mu   sync.Mutex
	keys map[string]*limited
}

type limited struct {
	at   time.Time // when the key's last line went through
	held int       // lines held back since
}

// NewLimiter lets each key through once per every, remembering at most
// maxKeys keys (past that it forgets them all: a flood of distinct keys
// costs bounded memory and, at worst, one line per key again). now is
// the clock (nil: time.Now).
func NewLimiter(every time.Duration, maxKeys int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{every: every, max: maxKeys, now: now, keys: map[string]*limited{}}
}

// Allow says whether key's line may be logged now and, when it may, how
// many of key's lines were held back since the last one went through
// (log it with the line: "held_back").
func (l *Limiter) Allow(key string) (ok bool, held int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.keys[key]
	if k != nil && now.Sub(k.at) < l.every {
		k.held++
		return false, 0
	}
	if k == nil {
		if len(l.keys) >= l.max {
			clear(l.keys)
		}
		k = &limited{}
		l.keys[key] = k
	}
	held, k.at, k.held = k.held, now, 0
	return true, held
}
