// Package fleet names what every layer of Chiffon says about a node (its
// roles and its GPU vendor) and derives, in one place, the VRAM figures
// that per-GPU detail adds up to: the count, the totals and the largest
// free VRAM on one GPU.
//
// It imports only the standard library, so that probe and consensus, which
// import nothing else of Chiffon's, can use it as well as gossip, the API
// and the CLI. Packages with a public surface re-export these names
// (gossip.RoleDesktop, probe.GPUTypes, apitype.GPUTypes) rather than
// spelling them again.
package fleet

// Role names: a node is a desktop, an orchestrator, or both.
const (
	RoleDesktop      = "desktop"
	RoleOrchestrator = "orchestrator"
)

// Roles lists every role.
var Roles = []string{RoleDesktop, RoleOrchestrator}

// GPU vendors a node can report.
const (
	GPUTypeNVIDIA = "nvidia"
	GPUTypeAMD    = "amd"
	GPUTypeIntel  = "intel"
	// GPUTypeNone is a node without a GPU.
	GPUTypeNone = "none"
)

// GPUTypes lists every GPU type, for validation and help text.
var GPUTypes = []string{GPUTypeNVIDIA, GPUTypeAMD, GPUTypeIntel, GPUTypeNone}

// GPUVendors is GPUTypes without GPUTypeNone: the values that name a
// vendor, which a work request may require.
var GPUVendors = []string{GPUTypeNVIDIA, GPUTypeAMD, GPUTypeIntel}

// VRAM is what a node's GPUs add up to, in GB.
type VRAM struct {
	// Count is the number of GPUs.
	Count int
	// TotalGB and FreeGB are sums over all GPUs.
	TotalGB, FreeGB float64
	// MaxFreeGB is the largest free VRAM on one GPU: a job that needs N GB
	// needs it on one card, so this is what capacity filters compare.
	MaxFreeGB float64
}

// SumVRAM adds up n GPUs, whose total and free VRAM gpu(i) returns. A node
// without per-GPU detail (a metrics file may give only the totals, and
// gossip drops the detail when tags run out of room) reports totalGB and
// freeGB: they describe one card when totalGB > 0, none otherwise.
func SumVRAM(n int, gpu func(i int) (totalGB, freeGB float64), totalGB, freeGB float64) VRAM {
	if n == 0 {
		v := VRAM{TotalGB: totalGB, FreeGB: freeGB, MaxFreeGB: freeGB}
		if totalGB > 0 {
			v.Count = 1
		}
		return v
	}
	v := VRAM{Count: n}
	for i := range n {
		t, f := gpu(i)
		v.TotalGB += t
		v.FreeGB += f
		v.MaxFreeGB = max(v.MaxFreeGB, f)
	}
	return v
}
