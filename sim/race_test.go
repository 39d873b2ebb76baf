//go:build race

package sim

// raceEnabled: the race detector makes every node's encoding several
// times dearer, so the suite's fleet is smaller under it.
const raceEnabled = true
