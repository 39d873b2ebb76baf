package dispatch

import "github.com/chiffon-dev/chiffon/consensus"

// supports reports whether every raft server can apply command type t
// (Config.Supports; all can when it is nil).
func (d *Dispatcher) supports(t consensus.CommandType) bool {
	return d.cfg.Supports == nil || d.cfg.Supports(t)
}
