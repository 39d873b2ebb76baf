package fleet

import (
	"math"
	"time"
)

// VRAMHold is the VRAM one piece of Chiffon work holds on a GPU from its
// placement until it ends: its MinGPUVRAMGB.
type VRAMHold struct {
	// WorkID names the work.
	WorkID string
	// GB is the VRAM it asked for.
	GB float64
	// PlacedAt is when the leader assigned it to the GPU.
	PlacedAt time.Time
	// StartedAt is when it started running; zero while it has not.
	StartedAt time.Time
}

// Seen reports whether a sample taken at sampledAt already shows h's use:
// the work was placed and had started strictly before the sample. A zero
// sampledAt (the sample's time is unknown) shows no hold.
func (h VRAMHold) Seen(sampledAt time.Time) bool {
	return !sampledAt.IsZero() && !h.StartedAt.IsZero() &&
		h.PlacedAt.Before(sampledAt) && h.StartedAt.Before(sampledAt)
}

// GPULedger is what Chiffon knows of one GPU's VRAM: the desktop's last
// sample of it, the VRAM always left to the owner, and the holds of the
// work placed on it. Its methods are pure.
//
// The rule (docs/ARCHITECTURE.md, "VRAM ledger"):
//
//	offered = max(0, min(TotalGB − Σ every hold,
//	                     FreeGB − HeadroomGB − Σ holds not Seen by the sample))
//
// The first term keeps Chiffon from promising more than the card has: every
// hold counts there until its work ends, whatever the samples say (work
// that uses less than it asked for may still grow to it). The second keeps
// Chiffon off VRAM it has not seen free: a hold placed after the sample, or
// whose work had not started before it, is taken off the observed free
// VRAM in full; a hold whose work had started before the sample is assumed
// to be inside the sample's use and is not taken off twice. When the
// owner (or anything outside Chiffon) uses VRAM, the sample's free figure
// is lower than TotalGB − Σ holds and the second term wins at once.
//
// A TotalGB of 0 means unknown, and drops the first term. Non-finite
// figures count as 0 and negative hold sizes as 0, so a garbled
// sample never offers more than a sane one.
type GPULedger struct {
	// TotalGB is the GPU's memory; 0 when the sample did not say (then
	// only the sample's term of the rule applies).
	TotalGB float64
	// FreeGB is the free VRAM the desktop's last sample observed.
	FreeGB float64
	// SampledAt is when the desktop took that sample; zero when unknown
	// (then no hold counts as Seen: every hold comes off FreeGB).
	SampledAt time.Time
	// HeadroomGB is VRAM always left free for the desktop's owner.
	HeadroomGB float64
	// Holds are the holds of the assigned and running work on this GPU.
	Holds []VRAMHold
}

// ReservedGB is the sum of every hold, seen or not.
func (l GPULedger) ReservedGB() float64 {
	var s float64
	for _, h := range l.Holds {
		s += finite(h.GB)
	}
	return s
}

// UnseenGB is the sum of the holds that the sample does not show yet.
func (l GPULedger) UnseenGB() float64 {
	var s float64
	for _, h := range l.Holds {
		if !h.Seen(l.SampledAt) {
			s += finite(h.GB)
		}
	}
	return s
}

// Balance is the rule's minimum before clamping at zero: negative when the
// GPU is already over-committed (work placed in the past, or the owner,
// took more than there is), which placement uses to keep even work asking
// for no VRAM off such a GPU.
func (l GPULedger) Balance() float64 {
	bySample := finite(l.FreeGB) - finite(l.HeadroomGB) - l.UnseenGB()
	if finite(l.TotalGB) == 0 {
		return bySample
	}
	return min(finite(l.TotalGB)-l.ReservedGB(), bySample)
}

// OfferedGB is the VRAM new work may be given on this GPU (≥ 0).
func (l GPULedger) OfferedGB() float64 { return max(0, l.Balance()) }

// finite is v when it is a finite number ≥ 0, else 0.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0
	}
	return v
}
