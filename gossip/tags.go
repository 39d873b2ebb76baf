package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"

	"github.com/chiffon-dev/chiffon/internal/fleet"
	"github.com/chiffon-dev/chiffon/probe"
)

// Tag keys that Chiffon owns. Every other key belongs to the operator (for
// example set with `serf tags -set`) and is left untouched by heartbeats.
//
// Keys are short because serf's tags share memberlist's 512-byte node meta
// budget; gpu_type and role keep readable names so that the stock
// `serf members -tag gpu_type=nvidia` and `-tag role=desktop` filters work.
const (
	TagVersion   = "cv"       // codec version, "1"
	TagAgentID   = "id"       // agent_id, a UUID persisted in the data dir
	TagRole      = "role"     // comma-separated roles
	TagGPUType   = "gpu_type" // nvidia | amd | intel | none
	TagAPIAddr   = "api"      // HTTP API address (host:port), if served
	TagRaftAddr  = "raft"     // raft address (host:port), orchestrators only
	TagRaftReady = "rs"       // "1" once the orchestrator has raft state
	TagWork      = "wk"       // work slots@address (https://host:port over TLS), desktops with a work handler
	TagCPU       = "cpu"      // load1/load5/load15/physical/available
	TagMem       = "mem"      // percent/availableGB
	TagVRAM      = "vram"     // totalGB/availableGB/maxFreeOneGPU/count
	TagGPUs      = "gpus"     // per GPU: free[:util[:model[:index]]] joined by ';'
	TagGPUNames  = "gm"       // card models, name@totalGB joined by '|'
	TagSampledAt = "ts"       // when the desktop took its sample, Unix seconds (1 decimal)
	TagOwner     = "ow"       // owner at the keyboard: a|i (active|idle) ':' since, Unix seconds
	TagPower     = "pw"       // "s": the machine is going to sleep (absent: awake)
	TagMAC       = "mac"      // MAC address of the bound interface, for wake-on-LAN
	TagRaftCmds  = "rc"       // orchestrators: the highest raft command type this build applies
)

// CodecVersion is the version written in TagVersion. A decoder refuses a
// higher major version instead of misreading it.
const CodecVersion = 1

// ownedKeys are the keys a heartbeat may set or delete.
var ownedKeys = []string{TagVersion, TagAgentID, TagRole, TagGPUType, TagAPIAddr,
	TagRaftAddr, TagRaftReady, TagWork, TagCPU, TagMem, TagVRAM, TagGPUs, TagGPUNames,
	TagSampledAt, TagOwner, TagPower, TagMAC, TagRaftCmds}

// IsOwnedTag reports whether key is one of Chiffon's own tag keys.
func IsOwnedTag(key string) bool { return slices.Contains(ownedKeys, key) }

// Role names (package fleet's).
const (
	RoleDesktop      = fleet.RoleDesktop
	RoleOrchestrator = fleet.RoleOrchestrator
)

// Errors returned by the tag codec.
var (
	// ErrTagsTooLarge means even the aggregate tags (without per-GPU detail)
	// do not fit serf's budget beside the operator's own tags.
	ErrTagsTooLarge = errors.New("tags exceed serf's 512-byte limit")
	// ErrBadTags means a member's tags could not be decoded.
	ErrBadTags = errors.New("malformed chiffon tags")
)

// MaxTagBytes is serf's limit on the encoded tags (memberlist.MetaMaxSize).
const MaxTagBytes = memberlist.MetaMaxSize

// softTagBytes is the size Chiffon tries to stay under, shortening GPU
// names before it would use the last 64 bytes that operators' own tags
// (`serf tags -set`) may want.
const softTagBytes = MaxTagBytes - 64

// maxGPUNameLen caps one GPU name in the tags; longer names are cut first
// when the budget is tight.
const maxGPUNameLen = 40

// NodeInfo is what one node tells the cluster about itself through tags.
type NodeInfo struct {
	AgentID  string
	Roles    []string
	APIAddr  string
	RaftAddr string
	// RaftReady is set by an orchestrator that has raft state (bootstrapped
	// or added by a leader), so that newcomers with -bootstrap-expect join
	// the existing cluster instead of founding a second one.
	RaftReady bool
	// WorkSlots and WorkAddr: a desktop with a work handler runs up to
	// WorkSlots items at once and takes them at WorkAddr (host:port).
	WorkSlots int
	WorkAddr  string
	// Sample holds the decoded resource metrics (quantised: loads to 0.01,
	// sizes to 0.1 GB, percentages to 0.1).
	Sample probe.Sample
	// MaxFreeVRAMGB is the largest free VRAM on one GPU; GPUCount the number
	// of GPUs. Both survive even when per-GPU detail was dropped for space.
	MaxFreeVRAMGB float64
	GPUCount      int
	// Detail is false when per-GPU detail was left out to fit the budget.
	Detail bool
	// Sample.TakenAt travels as TagSampledAt (to 0.1 s): the desktop's own
	// clock, so that answers can say how old a figure is.

	// Owner is OwnerActive or OwnerIdle when the desktop knows whether its
	// owner is at the keyboard, "" when it does not; OwnerSince is when that
	// state began (to the second).
	Owner      string
	OwnerSince time.Time
	// Asleep is set by a desktop about to suspend (TagPower).
	Asleep bool
	// MAC is the hardware address of the interface the desktop binds, for
	// wake-on-LAN; "" when unknown or opted out.
	MAC string
	// RaftCommands is, on an orchestrator, the highest raft command type
	// its build can apply (0: not said, as by 0.1.0, which applies 1–7).
	// A leader writes a newer command only once every raft server says it
	// can apply it: an older follower would stop on it.
	RaftCommands int
}

// Owner states a desktop announces (NodeInfo.Owner).
const (
	OwnerActive = "active"
	OwnerIdle   = "idle"
)

// HasRole reports whether the node announced role r.
func (n NodeInfo) HasRole(r string) bool { return slices.Contains(n.Roles, r) }

// EncodedSize is the number of bytes serf will use to carry tags: a magic
// byte followed by a msgpack map, exactly as serf encodes them.
func EncodedSize(tags map[string]string) int {
	var buf bytes.Buffer
	buf.WriteByte(0xff)
	enc := codec.NewEncoder(&buf, &codec.MsgpackHandle{})
	if err := enc.Encode(tags); err != nil {
		// A map of strings always encodes; treat failure as "too big".
		return math.MaxInt
	}
	return buf.Len()
}

// num formats v rounded to the given decimals without trailing zeros.
func num(v float64, decimals int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0
	}
	p := math.Pow10(decimals)
	v = math.Round(v*p) / p
	if v == 0 {
		v = 0 // no "-0"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// EncodeTags merges info into a copy of current (the node's present tags,
// which may hold the operator's own keys) and returns the new tag map. It
// keeps the result within MaxTagBytes: per-GPU names are shortened first,
// then left out, then per-GPU detail is left out (aggregates always stay).
// Chiffon keys that no longer apply are deleted, other keys are kept as is.
func EncodeTags(current map[string]string, info NodeInfo) (map[string]string, error) {
	out := make(map[string]string, len(current)+len(ownedKeys))
	for k, v := range current {
		if !IsOwnedTag(k) {
			out[k] = v
		}
	}
	s := info.Sample
	out[TagVersion] = strconv.Itoa(CodecVersion)
	if info.AgentID != "" {
		out[TagAgentID] = info.AgentID
	}
	if len(info.Roles) > 0 {
		out[TagRole] = strings.Join(info.Roles, ",")
	}
	if info.APIAddr != "" {
		out[TagAPIAddr] = info.APIAddr
	}
	if info.RaftAddr != "" {
		out[TagRaftAddr] = info.RaftAddr
	}
	if info.RaftReady {
		out[TagRaftReady] = "1"
	}
	if info.RaftCommands > 0 {
		out[TagRaftCmds] = strconv.Itoa(info.RaftCommands)
	}
	if info.WorkSlots > 0 && info.WorkAddr != "" {
		out[TagWork] = strconv.Itoa(info.WorkSlots) + "@" + info.WorkAddr
	}
	if !info.HasRole(RoleDesktop) {
		// Orchestrator-only nodes offer no capacity; keep their tags small.
		if EncodedSize(out) > MaxTagBytes {
			return nil, fmt.Errorf("%w: %d bytes", ErrTagsTooLarge, EncodedSize(out))
		}
		return out, nil
	}
	if !s.TakenAt.IsZero() {
		// Rounded down, never up: the VRAM ledger counts a hold as inside
		// the sample when its work started before this time, so a time a
		// little early only counts fewer holds as seen.
		out[TagSampledAt] = num(float64(s.TakenAt.Truncate(100*time.Millisecond).UnixMilli())/1000, 1)
	}
	switch info.Owner {
	case OwnerActive, OwnerIdle:
		v := info.Owner[:1]
		if !info.OwnerSince.IsZero() {
			v += ":" + strconv.FormatInt(info.OwnerSince.Unix(), 10)
		}
		out[TagOwner] = v
	case "":
	default:
		return nil, fmt.Errorf("%w: owner state %q: want %q or %q", ErrBadTags, info.Owner, OwnerActive, OwnerIdle)
	}
	if info.Asleep {
		out[TagPower] = "s"
	}
	if info.MAC != "" {
		hw, err := net.ParseMAC(info.MAC)
		if err != nil || len(hw) != 6 {
			return nil, fmt.Errorf("%w: MAC address %q: want six bytes like 0a:1b:2c:3d:4e:5f", ErrBadTags, info.MAC)
		}
		out[TagMAC] = hw.String()
	}
	gpuType := s.GPUType
	if gpuType == "" {
		gpuType = probe.GPUTypeNone
	}
	out[TagGPUType] = gpuType
	out[TagCPU] = strings.Join([]string{num(s.CPULoad1, 2), num(s.CPULoad5, 2),
		num(s.CPULoad15, 2), strconv.Itoa(s.CPUCoresPhysical), num(s.CPUCoresAvailable, 2)}, "/")
	out[TagMem] = num(s.MemoryPercent, 1) + "/" + num(s.MemoryAvailableGB, 1)
	v := s.VRAM() // totals without detail describe one card
	out[TagVRAM] = strings.Join([]string{num(v.TotalGB, 1), num(v.FreeGB, 1),
		num(v.MaxFreeGB, 1), strconv.Itoa(v.Count)}, "/")

	// Per-GPU detail, tried from richest to leanest until it fits: first
	// within a soft limit that leaves the operator room for their own tags,
	// then within serf's hard limit.
	for _, limit := range []int{softTagBytes, MaxTagBytes} {
		for _, level := range []struct {
			detail  bool
			names   bool
			nameLen int
		}{{true, true, maxGPUNameLen}, {true, true, 16}, {true, false, 0}, {false, false, 0}} {
			delete(out, TagGPUs)
			delete(out, TagGPUNames)
			if level.detail && len(s.GPUs) > 0 {
				out[TagGPUs], out[TagGPUNames] = encodeGPUs(s.GPUs, level.names, level.nameLen)
				if out[TagGPUNames] == "" {
					delete(out, TagGPUNames)
				}
			}
			if EncodedSize(out) <= limit {
				return out, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: %d bytes with aggregates only", ErrTagsTooLarge, EncodedSize(out))
}

// encodeGPUs renders per-GPU entries and the table of card models. A model
// is "name@totalGB"; an entry is "free[:util[:model[:index]]]", where the
// model number is left out when all cards are the same model and the index
// when it equals the entry's position (the usual case), to fit 8 GPUs with
// long names beside the other tags.
func encodeGPUs(gpus []probe.GPU, withNames bool, nameLen int) (entries, models string) {
	var table []string
	model := make([]int, len(gpus))
	for i, g := range gpus {
		n := ""
		if withNames {
			n = strings.ReplaceAll(strings.TrimSpace(g.Name), "|", "/")
			if len(n) > nameLen {
				n = strings.TrimSpace(n[:nameLen])
			}
		}
		key := n + "@" + num(g.VRAMTotalGB, 1)
		j := slices.Index(table, key)
		if j < 0 {
			j = len(table)
			table = append(table, key)
		}
		model[i] = j
	}
	parts := make([]string, len(gpus))
	for i, g := range gpus {
		f := []string{num(g.VRAMFreeGB, 1), "", "", ""}
		if g.UtilizationPct >= 0 {
			f[1] = num(g.UtilizationPct, 0)
		}
		if len(table) > 1 {
			f[2] = strconv.Itoa(model[i])
		}
		if g.Index != i {
			f[3] = strconv.Itoa(g.Index)
		}
		for len(f) > 1 && f[len(f)-1] == "" {
			f = f[:len(f)-1]
		}
		parts[i] = strings.Join(f, ":")
	}
	return strings.Join(parts, ";"), strings.Join(table, "|")
}

// DecodeTags reads a member's tags. Nodes that are not Chiffon nodes (no
// codec version) and malformed values yield an error wrapping ErrBadTags;
// unknown extra keys are ignored.
func DecodeTags(tags map[string]string) (NodeInfo, error) {
	var info NodeInfo
	v, ok := tags[TagVersion]
	if !ok {
		return info, fmt.Errorf("%w: no %q tag (not a chiffon node?)", ErrBadTags, TagVersion)
	}
	ver, err := strconv.Atoi(v)
	if err != nil || ver < 1 {
		return info, fmt.Errorf("%w: codec version %q", ErrBadTags, v)
	}
	if ver > CodecVersion {
		return info, fmt.Errorf("%w: codec version %d is newer than this build's %d", ErrBadTags, ver, CodecVersion)
	}
	info.AgentID = tags[TagAgentID]
	if r := tags[TagRole]; r != "" {
		info.Roles = strings.Split(r, ",")
	}
	info.APIAddr = tags[TagAPIAddr]
	info.RaftAddr = tags[TagRaftAddr]
	info.RaftReady = tags[TagRaftReady] == "1"
	if rc, ok := tags[TagRaftCmds]; ok {
		n, err := strconv.Atoi(rc)
		if err != nil || n < 1 || n > 255 {
			return info, fmt.Errorf("%w: %s=%q: want a raft command type, 1-255", ErrBadTags, TagRaftCmds, rc)
		}
		info.RaftCommands = n
	}
	if w, ok := tags[TagWork]; ok {
		slots, addr, found := strings.Cut(w, "@")
		n, err := strconv.Atoi(slots)
		if !found || err != nil || n < 0 || addr == "" {
			return info, fmt.Errorf("%w: %s=%q: want slots@host:port", ErrBadTags, TagWork, w)
		}
		info.WorkSlots, info.WorkAddr = n, addr
	}
	s := &info.Sample
	s.GPUType = tags[TagGPUType]
	if t, ok := tags[TagSampledAt]; ok {
		f, err := floats(t, 1)
		if err != nil {
			return info, fmt.Errorf("%w: %s=%q: %v", ErrBadTags, TagSampledAt, t, err)
		}
		s.TakenAt = time.UnixMilli(int64(math.Round(f[0] * 1000))).UTC()
	}
	if o, ok := tags[TagOwner]; ok {
		st, since, _ := strings.Cut(o, ":")
		switch st {
		case "a":
			info.Owner = OwnerActive
		case "i":
			info.Owner = OwnerIdle
		default:
			return info, fmt.Errorf("%w: %s=%q: want a|i[:since]", ErrBadTags, TagOwner, o)
		}
		if since != "" {
			sec, err := strconv.ParseInt(since, 10, 64)
			if err != nil || sec < 0 {
				return info, fmt.Errorf("%w: %s=%q: bad since", ErrBadTags, TagOwner, o)
			}
			info.OwnerSince = time.Unix(sec, 0).UTC()
		}
	}
	info.Asleep = tags[TagPower] == "s"
	if m, ok := tags[TagMAC]; ok {
		hw, err := net.ParseMAC(m)
		if err != nil || len(hw) != 6 {
			return info, fmt.Errorf("%w: %s=%q: not a 6-byte MAC address", ErrBadTags, TagMAC, m)
		}
		info.MAC = hw.String()
	}
	if c, ok := tags[TagCPU]; ok {
		f, err := floats(c, 5)
		if err != nil {
			return info, fmt.Errorf("%w: %s=%q: %v", ErrBadTags, TagCPU, c, err)
		}
		s.CPULoad1, s.CPULoad5, s.CPULoad15 = f[0], f[1], f[2]
		s.CPUCoresPhysical, s.CPUCoresAvailable = int(f[3]), f[4]
	}
	if m, ok := tags[TagMem]; ok {
		f, err := floats(m, 2)
		if err != nil {
			return info, fmt.Errorf("%w: %s=%q: %v", ErrBadTags, TagMem, m, err)
		}
		s.MemoryPercent, s.MemoryAvailableGB = f[0], f[1]
	}
	if vr, ok := tags[TagVRAM]; ok {
		f, err := floats(vr, 4)
		if err != nil {
			return info, fmt.Errorf("%w: %s=%q: %v", ErrBadTags, TagVRAM, vr, err)
		}
		s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB, info.MaxFreeVRAMGB = f[0], f[1], f[2]
		info.GPUCount = int(f[3])
	}
	if g, ok := tags[TagGPUs]; ok && g != "" {
		gpus, err := decodeGPUs(g, tags[TagGPUNames])
		if err != nil {
			return info, fmt.Errorf("%w: %s=%q: %v", ErrBadTags, TagGPUs, g, err)
		}
		s.GPUs = gpus
		info.Detail = true
	}
	return info, nil
}

// floats parses exactly n non-negative '/'-separated numbers.
func floats(s string, n int) ([]float64, error) {
	parts := strings.Split(s, "/")
	if len(parts) != n {
		return nil, fmt.Errorf("want %d '/'-separated numbers, got %d", n, len(parts))
	}
	out := make([]float64, n)
	for i, p := range parts {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("field %d: %q is not a non-negative number", i+1, p)
		}
		out[i] = f
	}
	return out, nil
}

func decodeGPUs(entries, models string) ([]probe.GPU, error) {
	type cardModel struct {
		name  string
		total float64
	}
	var table []cardModel
	if models != "" {
		for _, m := range strings.Split(models, "|") {
			at := strings.LastIndexByte(m, '@')
			if at < 0 {
				return nil, fmt.Errorf("model %q: want name@totalGB", m)
			}
			t, err := floats(m[at+1:], 1)
			if err != nil {
				return nil, fmt.Errorf("model %q: %v", m, err)
			}
			table = append(table, cardModel{m[:at], t[0]})
		}
	}
	parts := strings.Split(entries, ";")
	if len(parts) > 64 {
		return nil, fmt.Errorf("%d GPUs is more than 64", len(parts))
	}
	gpus := make([]probe.GPU, 0, len(parts))
	for i, p := range parts {
		f := strings.Split(p, ":")
		if len(f) > 4 {
			return nil, fmt.Errorf("GPU entry %q: want free[:util[:model[:index]]]", p)
		}
		f = append(f, "", "", "")[:4]
		free, err := floats(f[0], 1)
		if err != nil {
			return nil, fmt.Errorf("GPU entry %q: %v", p, err)
		}
		g := probe.GPU{Index: i, VRAMFreeGB: free[0], UtilizationPct: -1}
		if f[1] != "" {
			u, err := strconv.ParseFloat(f[1], 64)
			if err != nil || u < 0 || u > 100 {
				return nil, fmt.Errorf("GPU entry %q: bad utilisation", p)
			}
			g.UtilizationPct = u
		}
		m := 0
		if f[2] != "" {
			if m, err = strconv.Atoi(f[2]); err != nil || m < 0 {
				return nil, fmt.Errorf("GPU entry %q: bad model number", p)
			}
		}
		if m >= len(table) {
			return nil, fmt.Errorf("GPU entry %q: model %d not in %q", p, m, models)
		}
		g.Name, g.VRAMTotalGB = table[m].name, table[m].total
		if f[3] != "" {
			if g.Index, err = strconv.Atoi(f[3]); err != nil || g.Index < 0 {
				return nil, fmt.Errorf("GPU entry %q: bad index", p)
			}
		}
		gpus = append(gpus, g)
	}
	return gpus, nil
}
