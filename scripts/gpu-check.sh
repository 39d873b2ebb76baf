#!/usr/bin/env bash
# Checks the probe against a real NVIDIA GPU (needs the driver: libnvidia-ml
# and nvidia-smi). Prints "gpucheck <check> pass|FAIL <figures>" lines and
# exits non-zero on a failure. Not part of `make test`: CI has no GPU.
#
#   scripts/gpu-check.sh                 # build and run here
#   GPUCHECK=path CHIFFON=path scripts/gpu-check.sh   # prebuilt binaries
#
# With PyTorch on the machine (python3 -c 'import torch'), it also holds
# HOLD_GB (default 8) of VRAM in a second process and checks that both NVML
# and nvidia-smi see it taken and given back.
set -euo pipefail
cd "$(dirname "$0")/.."
HOLD_GB=${HOLD_GB:-8}
if [ -z "${GPUCHECK:-}" ]; then
  mkdir -p bin
  CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" go build -o bin/gpucheck ./scripts/gpucheck
  GPUCHECK=bin/gpucheck
fi
if [ -z "${CHIFFON:-}" ]; then
  make -s build >/dev/null
  CHIFFON=bin/chiffon
fi
echo "== nvidia-smi"
nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free,utilization.gpu,driver_version --format=csv
echo "== chiffon probe (the agent's own sampling, every source enabled)"
"$CHIFFON" probe -log-level info
echo "== gpucheck"
hold=()
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  hold=(-hold-gb "$HOLD_GB" -hold-cmd "python3 -c \"import sys, torch; x = torch.empty(int($HOLD_GB * 2**30), dtype=torch.uint8, device='cuda'); torch.cuda.synchronize(); print('ready', flush=True); sys.stdin.read()\"")
else
  echo "no PyTorch with CUDA here: skipping the hold check"
fi
"$GPUCHECK" "${hold[@]}"
