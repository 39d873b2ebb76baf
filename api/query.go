package api

import (
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

// consistency is how fresh an answer must be.
type consistency int

const (
	// modeDefault answers from the leader's state; a follower forwards.
	modeDefault consistency = iota
	// modeStale answers from the local replica.
	modeStale
	// modeConsistent has the leader confirm its leadership with a quorum
	// first.
	modeConsistent
)

func (m consistency) String() string {
	switch m {
	case modeStale:
		return "stale"
	case modeConsistent:
		return "consistent"
	}
	return "default"
}

// queryOptions are the parameters every read endpoint accepts.
type queryOptions struct {
	mode consistency
	// blocking is true when index was given; then the query waits until the
	// registry index passes index, or wait passes.
	blocking bool
	index    uint64
	wait     time.Duration
	// maxStale, when hasMaxStale (?max_stale), bounds a stale read: a
	// follower whose last contact with the leader is older forwards it
	// (see Server.dispatch).
	hasMaxStale bool
	maxStale    time.Duration
	// tooStale, set by dispatch, says why a ?max_stale read was forwarded
	// (for the 503 when no leader answers).
	tooStale string
}

// capacityFilter is what GET /agents/available-capacity asks for. A zero
// bound matches every agent (no metric is negative).
type capacityFilter struct {
	minVRAM, minCores, minMem float64
	// gpuType is "" for any.
	gpuType string
	// vramTotal compares min_gpu_vram_gb with the VRAM free on all GPUs
	// together instead of the largest free VRAM on one GPU.
	vramTotal bool
	// ownerActive lists desktops whose owner is active too.
	ownerActive bool
}

// commonParams are accepted by every read endpoint.
var commonParams = []string{apitype.ParamStale, apitype.ParamConsistent, apitype.ParamIndex, apitype.ParamWait, apitype.ParamMaxStale}

// capacityParams are accepted by GET /agents/available-capacity.
var capacityParams = append(slices.Clone(commonParams),
	apitype.ParamMinGPUVRAMGB, apitype.ParamMinCPUCores, apitype.ParamMinMemoryAvailableGB,
	apitype.ParamGPUType, apitype.ParamVRAM, apitype.ParamIncludeOwnerActive)

// agentsParams are accepted by GET /agents.
var agentsParams = append(slices.Clone(commonParams), apitype.ParamStatus)

// checkParams rejects any parameter not in allowed, and any allowed one
// given twice: a misspelt filter silently ignored would return agents that
// do not meet it.
func checkParams(q url.Values, allowed []string) error {
	for k, vs := range q {
		if !slices.Contains(allowed, k) {
			return fmt.Errorf("unknown query parameter %q; allowed: %s", k, strings.Join(allowed, ", "))
		}
		if len(vs) > 1 {
			return fmt.Errorf("query parameter %q given %d times; give it once", k, len(vs))
		}
	}
	return nil
}

// parseFlag reads a presence flag such as ?stale: "", "true" and "1" turn it
// on, "false" and "0" off.
func parseFlag(q url.Values, name string) (bool, error) {
	vs, ok := q[name]
	if !ok {
		return false, nil
	}
	switch v := vs[0]; strings.ToLower(v) {
	case "", "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	default:
		return false, fmt.Errorf("%s=%q: want no value, true or false", name, v)
	}
}

// parseQueryOptions reads the consistency mode and blocking parameters.
// defaultWait is the wait of a blocking query that gives none; maxWait caps
// any wait.
func parseQueryOptions(q url.Values, defaultWait, maxWait time.Duration) (queryOptions, error) {
	var o queryOptions
	stale, err := parseFlag(q, apitype.ParamStale)
	if err != nil {
		return o, err
	}
	consistent, err := parseFlag(q, apitype.ParamConsistent)
	if err != nil {
		return o, err
	}
	if v, ok := q[apitype.ParamMaxStale]; ok {
		d, err := time.ParseDuration(v[0])
		if err != nil || d < 0 {
			return o, fmt.Errorf("%s=%q: want a duration ≥ 0 with a unit, such as 5s or 500ms (how long ago the answering node may last have heard from the leader)",
				apitype.ParamMaxStale, v[0])
		}
		o.hasMaxStale, o.maxStale = true, d
		stale = true // max_stale is a bound on a stale read
	}
	switch {
	case stale && consistent:
		return o, fmt.Errorf("stale (or max_stale) and consistent exclude each other; give one at most")
	case stale:
		o.mode = modeStale
	case consistent:
		o.mode = modeConsistent
	}
	if v, ok := q[apitype.ParamIndex]; ok {
		idx, err := strconv.ParseUint(v[0], 10, 64)
		if err != nil {
			return o, fmt.Errorf("index=%q: want a whole number ≥ 0 (the %s of an earlier response)", v[0], apitype.HeaderIndex)
		}
		o.blocking, o.index, o.wait = true, idx, defaultWait
	}
	if v, ok := q[apitype.ParamWait]; ok {
		if !o.blocking {
			return o, fmt.Errorf("wait=%q needs index: a blocking query waits for the registry index to pass index", v[0])
		}
		d, err := time.ParseDuration(v[0])
		if err != nil || d < 0 {
			return o, fmt.Errorf("wait=%q: want a duration ≥ 0 with a unit, such as 500ms, 30s or 5m (at most %s)", v[0], maxWait)
		}
		o.wait = d
	}
	o.wait = min(o.wait, maxWait)
	return o, nil
}

// parseBound reads a non-negative decimal number: digits, optionally a
// point and more digits ("8", "1.5"). strconv.ParseFloat alone would also
// take hex floats ("0x1p5"), exponents, "Inf" and digit separators, none
// of which a user means in a capacity filter.
func parseBound(q url.Values, name string) (float64, error) {
	vs, ok := q[name]
	if !ok {
		return 0, nil
	}
	f, err := strconv.ParseFloat(vs[0], 64)
	if err != nil || !isDecimal(vs[0]) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%s=%q: want a number ≥ 0, such as 8 or 1.5", name, vs[0])
	}
	return f, nil
}

// isDecimal reports whether s is digits, optionally followed by a point and
// at least one more digit.
func isDecimal(s string) bool {
	intPart, frac, hasPoint := strings.Cut(s, ".")
	digits := func(p string) bool {
		return p != "" && strings.Trim(p, "0123456789") == ""
	}
	return digits(intPart) && (!hasPoint || digits(frac))
}

// parseCapacityFilter reads the filters of GET /agents/available-capacity.
func parseCapacityFilter(q url.Values) (capacityFilter, error) {
	var (
		f   capacityFilter
		err error
	)
	if f.minVRAM, err = parseBound(q, apitype.ParamMinGPUVRAMGB); err != nil {
		return f, err
	}
	if f.minCores, err = parseBound(q, apitype.ParamMinCPUCores); err != nil {
		return f, err
	}
	if f.minMem, err = parseBound(q, apitype.ParamMinMemoryAvailableGB); err != nil {
		return f, err
	}
	if vs, ok := q[apitype.ParamGPUType]; ok {
		t := strings.ToLower(vs[0])
		if !slices.Contains(apitype.GPUTypes, t) {
			return f, fmt.Errorf("gpu_type=%q: want one of %s", vs[0], strings.Join(apitype.GPUTypes, ", "))
		}
		f.gpuType = t
	}
	if vs, ok := q[apitype.ParamVRAM]; ok {
		switch strings.ToLower(vs[0]) {
		case apitype.VRAMSingle:
		case apitype.VRAMTotal:
			f.vramTotal = true
		default:
			return f, fmt.Errorf("vram=%q: want %s (largest free VRAM on one GPU, the default) or %s (free VRAM of all GPUs together)",
				vs[0], apitype.VRAMSingle, apitype.VRAMTotal)
		}
	}
	if vs, ok := q[apitype.ParamIncludeOwnerActive]; ok {
		b, err := strconv.ParseBool(vs[0])
		if err != nil {
			return f, fmt.Errorf("%s=%q: want true or false", apitype.ParamIncludeOwnerActive, vs[0])
		}
		f.ownerActive = b
	}
	return f, nil
}

// parseStatus reads GET /agents?status=; "" means any.
func parseStatus(q url.Values) (string, error) {
	vs, ok := q[apitype.ParamStatus]
	if !ok {
		return "", nil
	}
	s := strings.ToLower(vs[0])
	if !slices.Contains(apitype.Statuses, s) {
		return "", fmt.Errorf("status=%q: want one of %s", vs[0], strings.Join(apitype.Statuses, ", "))
	}
	return s, nil
}

// parseAgentID checks that id is a UUID in its canonical 36-character form
// and returns it in lower case, as the registry stores it.
func parseAgentID(id string) (string, error) {
	if len(id) != 36 {
		return "", fmt.Errorf("agent id %q is not a UUID (want 36 characters such as 3f2c1e9a-6b1d-4c1e-9a57-0e2d6c1b7f10)", id)
	}
	for i := range len(id) {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", fmt.Errorf("agent id %q is not a UUID (want the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", id)
			}
		default:
			if !isHex(c) {
				return "", fmt.Errorf("agent id %q is not a UUID (%q is not a hex digit)", id, c)
			}
		}
	}
	return strings.ToLower(id), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
