package node

import (
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/fleet"
)

// metricsFromInfo turns decoded gossip tags into the registry's record of a
// node's resources. Everything comes from the tags, so it is the same on
// whichever orchestrator leads.
func metricsFromInfo(info gossip.NodeInfo) consensus.ResourceMetrics {
	s := info.Sample
	m := consensus.ResourceMetrics{
		CPULoad1Min:        s.CPULoad1,
		CPULoad5Min:        s.CPULoad5,
		CPULoad15Min:       s.CPULoad15,
		CPUCoresPhysical:   s.CPUCoresPhysical,
		CPUCoresAvailable:  s.CPUCoresAvailable,
		MemoryPercent:      s.MemoryPercent,
		MemoryAvailableGB:  s.MemoryAvailableGB,
		GPUVRAMTotalGB:     s.GPUVRAMTotalGB,
		GPUVRAMAvailableGB: s.GPUVRAMAvailableGB,
		GPUVRAMMaxFreeGB:   info.MaxFreeVRAMGB,
		GPUCount:           info.GPUCount,
		GPUType:            s.GPUType,
	}
	if m.GPUType == "" {
		m.GPUType = fleet.GPUTypeNone
	}
	for _, g := range s.GPUs {
		m.GPUs = append(m.GPUs, consensus.GPU(g)) // the same fields: the build breaks if they part
	}
	return m
}
