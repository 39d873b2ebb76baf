#!/usr/bin/env bash
# HA failover under load: 3 orchestrators as processes (scripts/cluster.sh),
# steady default-mode and ?stale load (wrk) on the two followers, kill -9 the
# leader, measure the new leader's arrival and count failed requests; five
# rounds, restarting the killed orchestrator between rounds.
#
#   scripts/failover.sh            (ROUNDS=5, LOAD_SECS=6 by default)
#
# Needs wrk (apt-get install wrk) and bin/chiffon (make build). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "failover.sh: needs wrk (apt-get install -y wrk)" >&2; exit 1; }
ROUNDS=${ROUNDS:-5}
LOAD_SECS=${LOAD_SECS:-6}
export CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d -t chiffon-failover.XXXXXX)}
export BASE_PORT=${BASE_PORT:-19500}
# wrk cannot present a client certificate, which the secured cluster's
# HTTP API requires: this script measures the plain cluster (INSECURE=1
# starts it with -insecure, no key, no TLS) until it gets a TLS load tool.
export INSECURE=${INSECURE:-1}
OUT=$(mktemp -d -t chiffon-failover-out.XXXXXX)
cleanup() { scripts/cluster.sh down >/dev/null 2>&1 || true; rm -rf "$OUT"; }
trap cleanup EXIT INT TERM

scripts/cluster.sh up >/dev/null
ORCHS=(orch-1 orch-2 orch-3)
http() { echo "127.0.0.1:$((BASE_PORT + 300 + ${1#orch-} - 1))"; }
leader() { # name of the leader, asked of any orchestrator that answers
  local n l
  for n in "${ORCHS[@]}"; do
    l=$(curl -fsS --max-time 1 "http://$(http "$n")/v1/status/leader" 2>/dev/null | sed -n 's/.*"http_addr" *: *"\([^"]*\)".*/\1/p') || continue
    for m in "${ORCHS[@]}"; do [ "$(http "$m")" = "$l" ] && { echo "$m"; return 0; }; done
  done
  return 1
}
ready_all() { # every orchestrator answers /readyz and sees 6 nodes online
  local n c
  for n in "${ORCHS[@]}"; do
    curl -fsS --max-time 1 "http://$(http "$n")/readyz" >/dev/null 2>&1 || return 1
    c=$(curl -fsS --max-time 1 "http://$(http "$n")/agents?stale&status=online" 2>/dev/null | grep -o '"agent_id"' | wc -l)
    [ "$c" -ge 6 ] || return 1
  done
}
wait_ready() { for _ in $(seq 300); do ready_all && return 0; sleep 0.1; done; echo "cluster not ready" >&2; return 1; }
# wrk prints "Non-2xx or 3xx responses: N" and "Socket errors: ..." only when non-zero.
failures() {
  local f=$1 n=0 s
  s=$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$f"); n=$((n + ${s:-0}))
  s=$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1+\2+\3+\4/p' "$f")
  [ -n "$s" ] && n=$((n + s))
  echo $n
}
requests() { sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$1"; }

wait_ready
printf '%-6s %-8s %-14s %-22s %-22s\n' round killed "new leader" "default: failed/total" "stale: failed/total"
total_fail=0
for r in $(seq "$ROUNDS"); do
  L=$(leader)
  F=(); for n in "${ORCHS[@]}"; do [ "$n" != "$L" ] && F+=("$n"); done
  q='agents/available-capacity?min_gpu_vram_gb=8'
  wrk -t1 -c8 -d"${LOAD_SECS}s" --timeout 10s "http://$(http "${F[0]}")/$q" >"$OUT/d0" 2>&1 &
  w1=$!
  wrk -t1 -c8 -d"${LOAD_SECS}s" --timeout 10s "http://$(http "${F[1]}")/$q" >"$OUT/d1" 2>&1 &
  w2=$!
  wrk -t1 -c4 -d"${LOAD_SECS}s" --timeout 10s "http://$(http "${F[0]}")/$q&stale" >"$OUT/s0" 2>&1 &
  w3=$!
  sleep 2
  kill -9 "$(cat "$CLUSTER_DIR/$L.pid")"
  t0=$(date +%s%N)
  NL=
  for _ in $(seq 400); do
    NL=$(leader 2>/dev/null) && [ "$NL" != "$L" ] && break
    sleep 0.01
  done
  ms=$((($(date +%s%N) - t0) / 1000000))
  wait $w1 $w2 $w3 || true
  df=$(($(failures "$OUT/d0") + $(failures "$OUT/d1"))); dt=$(($(requests "$OUT/d0") + $(requests "$OUT/d1")))
  sf=$(failures "$OUT/s0"); st=$(requests "$OUT/s0")
  total_fail=$((total_fail + df))
  printf '%-6s %-8s %-14s %-22s %-22s\n' "$r" "$L" "$NL ${ms}ms" "$df/$dt" "$sf/$st"
  scripts/cluster.sh start "$L" >/dev/null
  wait_ready
done
echo "default-mode failures over $ROUNDS leader kills: $total_fail"
