#!/usr/bin/env bash
# A local Chiffon cluster you can look at: a seed node and three desktops on
# 127.0.0.1 — this machine's real resources, plus two synthetic GPU desktops
# declared by metrics files. Ctrl-C leaves the cluster gracefully and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/chiffon}
[ -x "$BIN" ] || { echo "build first: make build" >&2; exit 1; }
SERF=$(command -v serf || echo "$(go env GOPATH)/bin/serf")
DIR=$(mktemp -d -t chiffon-demo.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "stopping (graceful leave)..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

# Synthetic desktops read their resources from files you can edit live.
cp scripts/demo/gpu-desktop-1.json scripts/demo/gpu-desktop-2.json "$DIR/"

start() { # name gossip-port rpc-port [extra flags...]
  local name=$1 gp=$2 rp=$3; shift 3
  "$BIN" agent -node "$name" -data-dir "$DIR/$name" -bind "127.0.0.1:$gp" -rpc-addr "127.0.0.1:$rp" \
    -heartbeat-interval 5s "$@" >"$DIR/$name.log" 2>&1 &
  pids+=($!)
}
start seed      17946 17373
sleep 0.5
start this-host 17947 17374 -join 127.0.0.1:17946
start gpu-1     17948 17375 -join 127.0.0.1:17946 -metrics-file "$DIR/gpu-desktop-1.json"
start gpu-2     17949 17376 -join 127.0.0.1:17946 -metrics-file "$DIR/gpu-desktop-2.json"

for _ in $(seq 50); do
  n=$("$BIN" members -rpc-addr 127.0.0.1:17373 -status alive -format json 2>/dev/null | grep -c '"name"' || true)
  [ "${n:-0}" -ge 4 ] && break
  sleep 0.2
done
"$BIN" members -rpc-addr 127.0.0.1:17373

cat <<MSG

Chiffon demo cluster is up (data and logs in $DIR).
Try, in another terminal:
  $SERF members -rpc-addr=127.0.0.1:17373 -detailed
  $SERF members -rpc-addr=127.0.0.1:17373 -tag gpu_type=nvidia
  $BIN members -rpc-addr=127.0.0.1:17373
  $BIN members -rpc-addr=127.0.0.1:17373 -format json
  $SERF tags -rpc-addr=127.0.0.1:17375 -set rack=b2      # survives heartbeats
  sed -i 's/"vram_free_gb": 21.5/"vram_free_gb": 3/' $DIR/gpu-desktop-1.json   # seen within a heartbeat (5s)
  tail -f $DIR/seed.log
Press Ctrl-C to stop.
MSG
wait
