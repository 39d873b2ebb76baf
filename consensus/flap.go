package consensus

import (
	"math"
	"time"
)

// A flap is a node coming back online after it fell silent: a status
// change from suspect (or offline) to online. Wi-Fi laptops and desktops
// on flaky links flap; placement prefers nodes that do not. The leader
// keeps a decaying count of them per node (Record.FlapScore): each flap
// adds 1, and the score halves every half-life (-flap-half-life,
// DefaultFlapHalfLife). The score is stored as of Record.StatusChangedAt
// and is rewritten only when the status changes, so that a decaying score
// costs no raft writes; readers decay it to their own now (FlapScoreAt).

// DefaultFlapHalfLife is the default -flap-half-life: one flap weighs 1
// at once, ½ after 10 minutes and under 0.01 after about 70 minutes, so a
// laptop that dropped off Wi-Fi a few times this morning counts as stable
// again by the afternoon.
const DefaultFlapHalfLife = 10 * time.Minute

// MaxHistory bounds Record.History: the node's last status transitions,
// so that a flapping node's record (and each raft entry carrying it) stays
// small.
const MaxHistory = 10

// minFlapScore is the score below which a decayed score is stored as 0:
// such a node counts as stable, and its record stays free of a number
// that means nothing.
const minFlapScore = 0.01

// DecayFlapScore returns score after elapsed time at the given half-life:
// score × 2^(−elapsed/halfLife). A non-positive elapsed leaves it as it is;
// a non-positive half-life means no memory (0).
func DecayFlapScore(score float64, elapsed, halfLife time.Duration) float64 {
	if score <= 0 {
		return 0
	}
	if elapsed <= 0 {
		return score
	}
	if halfLife <= 0 {
		return 0
	}
	out := score * math.Exp2(-float64(elapsed)/float64(halfLife))
	if out < minFlapScore {
		return 0
	}
	return out
}

// IsFlap reports whether a status change from → to is a flap: the node
// was silent (suspect, or offline) and is online again. Waking from sleep,
// rejoining after a graceful leave and going silent are not flaps.
func IsFlap(from, to Status) bool {
	return to == StatusOnline && (from == StatusSuspect || from == StatusOffline)
}

// FlapScoreAt is r's flap score decayed from r.StatusChangedAt to now.
func (r *Record) FlapScoreAt(now time.Time, halfLife time.Duration) float64 {
	return DecayFlapScore(r.FlapScore, now.Sub(r.StatusChangedAt), halfLife)
}

// RecordTransition notes a status change of r, made at, from → r.Status:
// it appends it to r.History (keeping the last MaxHistory) and rebases
// r.FlapScore from the previous change (prevChangedAt) to at, adding 1 for
// a flap. The caller sets r.Status and r.StatusChangedAt; a node new to
// the registry (from == "") records nothing.
func (r *Record) RecordTransition(from Status, prevChangedAt, at time.Time, halfLife time.Duration) {
	if from == "" || from == r.Status {
		return
	}
	score := DecayFlapScore(r.FlapScore, at.Sub(prevChangedAt), halfLife)
	if IsFlap(from, r.Status) {
		score++
	}
	r.FlapScore = score
	// A fresh slice: r may share its History with the record it came from.
	keep := r.History[max(0, len(r.History)-(MaxHistory-1)):]
	h := make([]Transition, 0, len(keep)+1)
	r.History = append(append(h, keep...), Transition{At: at, From: from, To: r.Status})
}
