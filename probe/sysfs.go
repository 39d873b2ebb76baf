package probe

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// PCI vendor IDs as the kernel writes them in device/vendor.
const (
	vendorAMD   = "0x1002"
	vendorIntel = "0x8086"
)

// readSysfs finds AMD and Intel GPUs under root/sys/class/drm. NVIDIA
// cards are left to NVML and nvidia-smi, which see their memory; sysfs does
// not. It returns the gpu_type of the card with the most VRAM, so a desktop
// with a Radeon and an Intel iGPU reports "amd".
func readSysfs(root string) (string, []GPU, error) {
	dir := filepath.Join(root, "sys", "class", "drm")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return GPUTypeNone, nil, nil // no DRM at all: a headless box, not a failure
	}
	if err != nil {
		return GPUTypeNone, nil, fmt.Errorf("sysfs: %w", err)
	}

	type card struct {
		num  int
		name string
	}
	var cards []card
	for _, e := range entries {
		// Only cardN; cardN-DP-1 and friends are connectors of cardN, and
		// renderDN nodes are the same devices again.
		num, ok := cardNumber(e.Name())
		if ok {
			cards = append(cards, card{num, e.Name()})
		}
	}
	sort.Slice(cards, func(i, j int) bool { return cards[i].num < cards[j].num })

	typ := GPUTypeNone
	var gpus []GPU
	var errs []error
	best := -1.0
	for _, c := range cards {
		dev := filepath.Join(dir, c.name, "device")
		vendor, err := readTrimmed(filepath.Join(dev, "vendor"))
		if err != nil {
			continue // a card without a vendor file is not a PCI GPU we know
		}
		var g GPU
		var t string
		switch vendor {
		case vendorAMD:
			t, g.Name = GPUTypeAMD, "AMD GPU"
		case vendorIntel:
			t, g.Name = GPUTypeIntel, "Intel GPU"
		default:
			continue
		}
		g.Index = c.num
		if name, err := readTrimmed(filepath.Join(dev, "product_name")); err == nil && name != "" {
			g.Name = name
		}
		// An Intel iGPU has no VRAM file; it still counts as a GPU, with 0.
		total, okTotal, err := readUint(filepath.Join(dev, "mem_info_vram_total"))
		if err != nil {
			errs = append(errs, fmt.Errorf("sysfs %s: %w", c.name, err))
		}
		used, okUsed, err := readUint(filepath.Join(dev, "mem_info_vram_used"))
		if err != nil {
			errs = append(errs, fmt.Errorf("sysfs %s: %w", c.name, err))
		}
		if okTotal {
			g.VRAMTotalGB = bytesToGB(total)
			// Without a used counter we cannot know better than "all of
			// it"; amdgpu always has one, only some Intel drivers do not.
			free := total
			if okUsed {
				free = total - min(used, total)
			}
			g.VRAMFreeGB = bytesToGB(free)
		}
		g.UtilizationPct = -1
		if busy, ok, err := readUint(filepath.Join(dev, "gpu_busy_percent")); err == nil && ok {
			g.UtilizationPct = float64(min(busy, 100))
		}
		gpus = append(gpus, g)
		if g.VRAMTotalGB > best {
			best, typ = g.VRAMTotalGB, t
		}
	}
	return typ, gpus, errors.Join(errs...)
}

// cardNumber returns N for a name "cardN".
func cardNumber(name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, "card")
	if !ok || digits == "" {
		return 0, false
	}
	for _, r := range digits {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil
}

// readTrimmed reads a small sysfs attribute.
func readTrimmed(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// readUint reads a decimal sysfs attribute. A missing file is ok=false and
// no error: most attributes are optional. An unreadable or garbled one is an
// error.
func readUint(path string) (v uint64, ok bool, err error) {
	s, err := readTrimmed(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	v, err = strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %q is not a number", filepath.Base(path), s)
	}
	return v, true, nil
}
