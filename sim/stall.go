package sim

import (
	"bytes"
	"fmt"
	"os"
	"runtime/trace"
	"sync"
	"time"
)

// A stall is the simulating process falling behind its own clock: every
// node in it waits for a CPU at once, so timeouts fire late or not at all
// and every figure of the run is stretched (DESIGN.md, "Whether the
// simulator kept up"). The stall watch measures it: one goroutine asks
// to wake every stallTick and records each wake-up later than that by
// stallMin or more. It measures the scheduler's delay, not the machine's:
// a goroutine that wakes late waited in the same run queues as the nodes.
const (
	stallTick = 50 * time.Millisecond
	stallMin  = time.Second
	// stallTraceAfter is how long after the first stall the flight
	// recorder's window is written, so that the trace shows its end too.
	stallTraceAfter = 2 * time.Second
)

// stallWatch runs until stop.
type stallWatch struct {
	sleep func(time.Duration) // time.Sleep; tests stall it
	// tracePath, if set, receives a runtime execution trace of the
	// seconds around the first stall (runtime/trace's flight recorder).
	tracePath string

	mu       sync.Mutex
	stalls   int
	longest  time.Duration
	traceErr error
	traced   bool

	fr   *trace.FlightRecorder
	stop chan struct{}
	done chan struct{}
}

// startStallWatch starts the watch; with tracePath, the flight recorder
// too (an error if another one runs).
func startStallWatch(tracePath string, sleep func(time.Duration)) (*stallWatch, error) {
	if sleep == nil {
		sleep = time.Sleep
	}
	w := &stallWatch{sleep: sleep, tracePath: tracePath, stop: make(chan struct{}), done: make(chan struct{})}
	if tracePath != "" {
		w.fr = trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: 20 * time.Second, MaxBytes: 256 << 20})
		if err := w.fr.Start(); err != nil {
			return nil, fmt.Errorf("-stall-trace: %w", err)
		}
	}
	go w.run()
	return w, nil
}

func (w *stallWatch) run() {
	defer close(w.done)
	var traceAt time.Time // when to write the trace: after the first stall
	written := false
	last := time.Now()
	for {
		select {
		case <-w.stop:
			if !written && !traceAt.IsZero() {
				w.writeTrace() // the run ended first
			}
			return
		default:
		}
		w.sleep(stallTick)
		now := time.Now()
		late := now.Sub(last) - stallTick
		last = now
		if late >= stallMin {
			w.mu.Lock()
			w.stalls++
			w.longest = max(w.longest, late)
			w.mu.Unlock()
			if w.fr != nil && traceAt.IsZero() {
				traceAt = now.Add(stallTraceAfter)
			}
		}
		if !written && !traceAt.IsZero() && !now.Before(traceAt) {
			w.writeTrace()
			written = true
		}
	}
}

func (w *stallWatch) writeTrace() {
	var buf bytes.Buffer
	_, err := w.fr.WriteTo(&buf)
	if err == nil {
		err = os.WriteFile(w.tracePath, buf.Bytes(), 0o644)
	}
	w.mu.Lock()
	w.traceErr, w.traced = err, err == nil
	w.mu.Unlock()
}

// close stops the watch (and the flight recorder) and returns the number
// of stalls, the longest, and whether a trace was written.
func (w *stallWatch) close() (stalls int, longest time.Duration, traced bool, err error) {
	close(w.stop)
	<-w.done
	if w.fr != nil {
		w.fr.Stop()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stalls, w.longest, w.traced, w.traceErr
}
