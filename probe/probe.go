package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Sentinel errors. Callers match them with errors.Is; every error this
// package returns for these conditions wraps one of them.
var (
	// ErrMetricsFile means the metrics file could not be read, decoded or
	// validated. Sample still returns the last good sample alongside it.
	ErrMetricsFile = errors.New("metrics file")

	// ErrInvalidSample means a Sample breaks one of Validate's rules; the
	// message names every offending field and what it allows.
	ErrInvalidSample = errors.New("invalid sample")

	// ErrNvidiaSMIOutput means nvidia-smi's CSV output could not be parsed.
	ErrNvidiaSMIOutput = errors.New("malformed nvidia-smi output")

	// ErrInvalidConfig means New was given a Config it cannot work with.
	ErrInvalidConfig = errors.New("invalid probe config")

	// ErrClosed means Sample was called after Close.
	ErrClosed = errors.New("prober closed")
)

// errUnavailable marks a source that is simply absent on this machine (no
// NVIDIA driver, no nvidia-smi on PATH). It is logged at Info rather than
// Warn because on an AMD or CPU-only desktop it is the expected state.
var errUnavailable = errors.New("source not present on this machine")

// Sample sources, as reported in Sample.Source.
const (
	SourceHost        = "host"
	SourceMetricsFile = "metrics-file"
)

// Names of the individual readers, used as the "source" key in log lines.
const (
	srcHost      = "host"
	srcNVML      = "nvml"
	srcSMI       = "nvidia-smi"
	srcSysfs     = "sysfs"
	srcFile      = "metrics-file"
	srcGPUSelect = "gpu"
)

// DefaultNvidiaSMITimeout bounds one nvidia-smi run: a wedged driver makes
// nvidia-smi hang for minutes, and a heartbeat must not wait that long.
const DefaultNvidiaSMITimeout = 5 * time.Second

// HostSample is the CPU and memory part of a Sample, as read by SampleHost
// or by Config.HostSource.
type HostSample struct {
	CPULoad1          float64
	CPULoad5          float64
	CPULoad15         float64
	CPUCoresPhysical  int
	MemoryPercent     float64
	MemoryAvailableGB float64
}

// Config configures a Prober. The zero value samples the real hardware with
// every GPU source enabled and logs to slog.Default().
type Config struct {
	// MetricsFile, when set, replaces the hardware entirely: every Sample
	// re-reads this JSON file (field names as in Sample's JSON tags). It is
	// meant for tests, demos and machines whose resources are declared.
	MetricsFile string

	// Logger receives one line per source state change. Nil means
	// slog.Default().
	Logger *slog.Logger

	// SysfsRoot is prefixed to /sys/class/drm, so tests can point it at a
	// fake tree. Empty means "/".
	SysfsRoot string

	// NvidiaSMIPath is the nvidia-smi binary; a bare name is looked up on
	// PATH at every run, so installing the driver later is picked up.
	// Empty means "nvidia-smi".
	NvidiaSMIPath string

	// NvidiaSMITimeout bounds one nvidia-smi run. Zero means
	// DefaultNvidiaSMITimeout.
	NvidiaSMITimeout time.Duration

	// NVML is the NVML library to use. Nil means the real libnvidia-ml via
	// nvml.New(); tests inject go-nvml's mocks.
	NVML nvml.Interface

	// DisableNVML, DisableNvidiaSMI and DisableSysfs turn a GPU source off.
	DisableNVML      bool
	DisableNvidiaSMI bool
	DisableSysfs     bool

	// HostSource overrides how CPU and memory are read; nil means
	// SampleHost. A non-nil error is logged and the values it returned
	// alongside are still used, so a partial reading is not thrown away.
	HostSource func(ctx context.Context) (HostSample, error)
}

// DefaultConfig returns the Config New would use for a zero Config, with
// the defaults filled in so that flags can show them.
func DefaultConfig() Config {
	return Config{
		SysfsRoot:        "/",
		NvidiaSMIPath:    "nvidia-smi",
		NvidiaSMITimeout: DefaultNvidiaSMITimeout,
	}
}

// Prober takes Samples. It is safe for concurrent use; samples are taken
// one at a time because the sources keep state (NVML handle, log state).
type Prober struct {
	cfg    Config
	logger *slog.Logger

	mu sync.Mutex
	// closed is set by Close. Guarded by mu.
	closed bool
	// nvmlInitDone, nvmlInitOK and nvmlInitErr record the one and only
	// nvml.Init call: after a failed Init any other NVML call aborts the
	// process (unresolved symbol), so a failure is remembered forever.
	// Guarded by mu.
	nvmlInitDone bool
	nvmlInitOK   bool
	nvmlInitErr  error
	// lastErr holds, per source, the text of the last error logged, so a
	// failure is logged once and again only when it changes or recovers.
	// Guarded by mu.
	lastErr map[string]string
	// gpuSource is the GPU source that won the last sample ("" for none),
	// logged when it changes. Guarded by mu.
	gpuSource string
	// lastGood is the last metrics-file sample that validated. Guarded by mu.
	lastGood    Sample
	hasLastGood bool
}

// New validates cfg, fills in defaults and returns a Prober. It opens
// nothing: NVML is initialised lazily on the first Sample, so a Prober that
// is never used costs nothing.
func New(cfg Config) (*Prober, error) {
	def := DefaultConfig()
	if cfg.SysfsRoot == "" {
		cfg.SysfsRoot = def.SysfsRoot
	}
	if cfg.NvidiaSMIPath == "" {
		cfg.NvidiaSMIPath = def.NvidiaSMIPath
	}
	if cfg.NvidiaSMITimeout == 0 {
		cfg.NvidiaSMITimeout = def.NvidiaSMITimeout
	}
	if cfg.NvidiaSMITimeout < 0 {
		return nil, fmt.Errorf("%w: nvidia-smi timeout %v must be positive", ErrInvalidConfig, cfg.NvidiaSMITimeout)
	}
	if cfg.HostSource == nil {
		cfg.HostSource = SampleHost
	}
	if cfg.NVML == nil && !cfg.DisableNVML && cfg.MetricsFile == "" {
		// nvml.New only records the library path; dlopen happens in Init.
		cfg.NVML = nvml.New()
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return &Prober{
		cfg:     cfg,
		logger:  logger.With("component", "probe"),
		lastErr: make(map[string]string),
	}, nil
}

// Sample reads the machine's resources now. In hardware mode it never fails
// because a source failed: a broken source contributes zeros and one log
// line. It fails only when ctx is already done, after Close, or in metrics
// file mode when the file is unusable (see ErrMetricsFile).
func (p *Prober) Sample(ctx context.Context) (Sample, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return Sample{GPUType: GPUTypeNone}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return Sample{GPUType: GPUTypeNone}, fmt.Errorf("sample: %w", err)
	}
	if p.cfg.MetricsFile != "" {
		return p.sampleFileLocked()
	}
	return p.sampleHardwareLocked(ctx), nil
}

// sampleHardwareLocked reads host metrics and the first GPU source that
// finds any GPU. p.mu must be held.
func (p *Prober) sampleHardwareLocked(ctx context.Context) Sample {
	s := Sample{GPUType: GPUTypeNone, Source: SourceHost, TakenAt: time.Now()}

	h, err := p.cfg.HostSource(ctx)
	p.reportLocked(srcHost, err)
	s.CPULoad1 = round2(h.CPULoad1)
	s.CPULoad5 = round2(h.CPULoad5)
	s.CPULoad15 = round2(h.CPULoad15)
	s.CPUCoresPhysical = h.CPUCoresPhysical
	s.MemoryPercent = round2(h.MemoryPercent)
	s.MemoryAvailableGB = round2(h.MemoryAvailableGB)
	if h.CPUCoresPhysical > 0 {
		// With no core count the AvailableCores floor of 1 would invent a
		// core; zero says "unknown" honestly.
		s.CPUCoresAvailable = round2(AvailableCores(h.CPUCoresPhysical, h.CPULoad1))
	}

	winner := ""
	for _, src := range p.gpuSourcesLocked() {
		typ, gpus, err := src.read(ctx)
		p.reportLocked(src.name, err)
		if len(gpus) > 0 {
			s.GPUType = typ
			s.GPUs = gpus
			s.GPUVRAMTotalGB, s.GPUVRAMAvailableGB = sumVRAM(gpus)
			winner = src.name
			break
		}
	}
	if winner != p.gpuSource {
		p.gpuSource = winner
		if winner == "" {
			p.logger.Info("no GPU found")
		} else {
			p.logger.Info("GPU source selected", "source", winner, "gpus", len(s.GPUs), "gpu-type", s.GPUType)
		}
	}
	return s
}

// gpuSource is one way of finding GPUs; read returns the GPUs it found and
// the gpu_type they report as.
type gpuSource struct {
	name string
	read func(ctx context.Context) (string, []GPU, error)
}

// gpuSourcesLocked lists the enabled GPU sources in order of preference:
// NVML is exact and cheap, nvidia-smi is NVML behind a fork, sysfs is the
// only way to see AMD and Intel cards.
func (p *Prober) gpuSourcesLocked() []gpuSource {
	var out []gpuSource
	if !p.cfg.DisableNVML && p.cfg.NVML != nil {
		out = append(out, gpuSource{srcNVML, func(context.Context) (string, []GPU, error) {
			g, err := p.readNVMLLocked()
			return GPUTypeNVIDIA, g, err
		}})
	}
	if !p.cfg.DisableNvidiaSMI {
		out = append(out, gpuSource{srcSMI, func(ctx context.Context) (string, []GPU, error) {
			g, err := runNvidiaSMI(ctx, p.cfg.NvidiaSMIPath, p.cfg.NvidiaSMITimeout)
			return GPUTypeNVIDIA, g, err
		}})
	}
	if !p.cfg.DisableSysfs {
		out = append(out, gpuSource{srcSysfs, func(context.Context) (string, []GPU, error) {
			return readSysfs(p.cfg.SysfsRoot)
		}})
	}
	return out
}

// reportLocked logs err for source if it differs from the last one logged,
// and logs a recovery when a failing source works again. This keeps a
// desktop without a GPU driver from logging on every heartbeat. p.mu must
// be held.
func (p *Prober) reportLocked(source string, err error) {
	prev, failing := p.lastErr[source]
	if err == nil {
		if failing {
			delete(p.lastErr, source)
			p.logger.Info("probe source recovered", "source", source)
		}
		return
	}
	msg := err.Error()
	if failing && msg == prev {
		return
	}
	p.lastErr[source] = msg
	if errors.Is(err, errUnavailable) {
		p.logger.Info("probe source unavailable", "source", source, "err", msg)
		return
	}
	if source == srcFile {
		p.logger.Warn("metrics file unusable; keeping the last good sample", "source", source, "err", msg)
		return
	}
	p.logger.Warn("probe source failed; using safe defaults", "source", source, "err", msg)
}

// Close releases NVML if it was initialised. It is idempotent; Sample
// returns ErrClosed afterwards.
func (p *Prober) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.nvmlInitOK {
		p.nvmlInitOK = false
		if ret := p.cfg.NVML.Shutdown(); ret != nvml.SUCCESS {
			return fmt.Errorf("nvml shutdown: %s", nvmlErrString(ret))
		}
	}
	return nil
}

// sumVRAM returns the total and free VRAM over gpus, rounded so that sums
// of two-decimal values do not print as 79.99000000000001.
func sumVRAM(gpus []GPU) (total, free float64) {
	for _, g := range gpus {
		total += g.VRAMTotalGB
		free += g.VRAMFreeGB
	}
	return round2(total), round2(free)
}

// round2 rounds to two decimals: enough for GB and load, and it keeps
// gossip tags short.
func round2(x float64) float64 {
	return math.Round(x*100) / 100
}

// gib is 2^30: every GB in this package is a binary gigabyte.
const gib = 1 << 30

// bytesToGB converts bytes to two-decimal GB.
func bytesToGB(b uint64) float64 {
	return round2(float64(b) / gib)
}
