//go:build race

package simnet

// raceEnabled: the race detector makes memberlist's encoding and
// compression several times dearer, so the real-stack test runs fewer
// nodes at a gentler time scale.
const raceEnabled = true
