package owner

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseState(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want State
		err  bool
	}{
		{"active", StateActive, false},
		{" IDLE\n", StateIdle, false},
		{"Idle", StateIdle, false},
		{"", "", true},
		{"away", "", true},
		{"active idle", "", true},
	} {
		got, err := ParseState(tc.in)
		if got != tc.want || (err != nil) != tc.err || (err != nil && !errors.Is(err, ErrInvalidState)) {
			t.Errorf("ParseState(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func FuzzParseState(f *testing.F) {
	for _, s := range []string{"active", "idle", " Idle ", "", "acti\x00ve"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseState(s)
		if err != nil {
			if st != "" || !errors.Is(err, ErrInvalidState) {
				t.Fatalf("ParseState(%q) = %q, %v", s, st, err)
			}
			return
		}
		if st != StateActive && st != StateIdle {
			t.Fatalf("ParseState(%q) = %q, not a state", s, st)
		}
		if again, err := ParseState(string(st)); again != st || err != nil {
			t.Fatalf("ParseState(%q) = %q, %v; does not round-trip", st, again, err)
		}
		if !strings.EqualFold(strings.TrimSpace(s), string(st)) {
			t.Fatalf("ParseState(%q) = %q", s, st)
		}
	})
}

func TestReading_Owner(t *testing.T) {
	const threshold = 10 * time.Minute
	for _, tc := range []struct {
		name      string
		r         Reading
		threshold time.Duration
		want      State
	}{
		{"just typed", Reading{Idle: 0}, threshold, StateActive},
		{"short of the threshold", Reading{Idle: threshold - time.Second}, threshold, StateActive},
		{"at the threshold", Reading{Idle: threshold}, threshold, StateIdle},
		{"declared idle just now", Reading{Declared: StateIdle}, threshold, StateIdle},
		{"declared active long ago", Reading{Declared: StateActive, Idle: time.Hour}, threshold, StateActive},
		{"owner ignored", Reading{Idle: 0}, 0, StateIdle},
		{"owner ignored, declared active", Reading{Declared: StateActive}, 0, StateIdle},
	} {
		if got := tc.r.Owner(tc.threshold); got != tc.want {
			t.Errorf("%s: Owner(%s) = %q, want %q", tc.name, tc.threshold, got, tc.want)
		}
	}
}

func TestOverride_SetReadClear(t *testing.T) {
	now := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	o := &Override{Now: func() time.Time { return now }}
	if _, err := o.Read(context.Background()); !errors.Is(err, ErrNoData) {
		t.Fatalf("Read with nothing declared = %v, want ErrNoData", err)
	}
	if err := o.Set("away", now); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("Set(away) = %v, want ErrInvalidState", err)
	}

	at := now.Add(-5 * time.Minute)
	if err := o.Set(StateIdle, at); err != nil {
		t.Fatal(err)
	}
	r, err := o.Read(context.Background())
	if err != nil || r.Declared != StateIdle || r.Idle != 5*time.Minute || !r.LastInput.Equal(at) || r.Source != "manual" {
		t.Fatalf("Read after Set(idle, 5m ago) = %+v, %v", r, err)
	}

	if err := o.Set(StateActive, at); err != nil {
		t.Fatal(err)
	}
	if r, err := o.Read(context.Background()); err != nil || r.Declared != StateActive || r.Idle != 0 {
		t.Fatalf("Read after Set(active) = %+v, %v", r, err)
	}
	if st, since := o.Get(); st != StateActive || !since.Equal(at) {
		t.Fatalf("Get = %q, %s", st, since)
	}

	o.Clear()
	if _, err := o.Read(context.Background()); !errors.Is(err, ErrNoData) {
		t.Fatalf("Read after Clear = %v, want ErrNoData", err)
	}
}

// fakeSource answers with r or fails with err, and counts its reads.
type fakeSource struct {
	name  string
	r     Reading
	err   error
	reads int
}

func (f *fakeSource) Name() string { return f.name }
func (f *fakeSource) Read(context.Context) (Reading, error) {
	f.reads++
	return f.r, f.err
}

func TestChain_FirstThatAnswers(t *testing.T) {
	boom := errors.New("bus on fire")
	manual := &Override{}
	logind := &fakeSource{name: "logind", err: ErrNoData}
	input := &fakeSource{name: "input", err: boom}
	tty := &fakeSource{name: "tty", r: Reading{Source: "tty", Idle: time.Minute}}
	last := &fakeSource{name: "never", r: Reading{Source: "never"}}
	c := NewChain(manual, logind, input, tty, last)

	r, err := c.Read(context.Background())
	if err != nil || r.Source != "tty" || r.Idle != time.Minute {
		t.Fatalf("Read = %+v, %v; want tty's reading", r, err)
	}
	if last.reads != 0 {
		t.Fatalf("a source after the first that answered was read %d times", last.reads)
	}

	// A state declared by hand, first in the chain, wins over measurement.
	if err := manual.Set(StateIdle, time.Now()); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Read(context.Background()); err != nil || r.Source != "manual" || r.Declared != StateIdle {
		t.Fatalf("Read with a declared state = %+v, %v", r, err)
	}
}

func TestChain_NoneAnswers(t *testing.T) {
	boom := errors.New("bus on fire")
	c := NewChain(&fakeSource{name: "logind", err: boom}, &fakeSource{name: "tty", err: ErrNoData})
	_, err := c.Read(context.Background())
	for _, want := range []error{ErrNoSource, ErrNoData, boom} {
		if !errors.Is(err, want) {
			t.Errorf("Read = %v; does not wrap %v", err, want)
		}
	}
	if err != nil && !strings.Contains(err.Error(), "logind: bus on fire") {
		t.Errorf("Read = %v; does not name the failing source", err)
	}
	if _, err := NewChain().Read(context.Background()); !errors.Is(err, ErrNoSource) {
		t.Errorf("empty chain: Read = %v, want ErrNoSource", err)
	}
}

func TestChain_StopsWhenContextDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := &fakeSource{name: "tty", r: Reading{Source: "tty"}}
	if _, err := NewChain(src).Read(ctx); !errors.Is(err, context.Canceled) || src.reads != 0 {
		t.Fatalf("Read on a done context = %v after %d reads; want context.Canceled, no read", err, src.reads)
	}
}
