#!/usr/bin/env bash
# Raft elections under CPU starvation: 3 orchestrators and N desktops as
# processes on 127.0.0.1, K busy loops for D seconds, then the leader is
# killed once (the loops still running). Prints one line: elections per
# minute (raft term increases: every election raises the term, pre-vote
# rounds do not), leader changes, the failover time (SIGKILL of the leader
# until a survivor names another leader over HTTP) and the load average.
# The desktops start all at once with the busy loops (a boot storm under
# load); elections in its first 20 s are counted apart.
#
#   scripts/elections.sh                                   today's defaults
#   HB=1s EL=1s LEASE=500ms PREVOTE=false scripts/elections.sh
#
# Environment: HB, EL, LEASE (-raft-heartbeat/election/lease-timeout;
# default: the binary's defaults), PREVOTE (true|false, default true),
# BUSY (busy loops, default 4), DESKTOPS (default 20), DURATION (seconds,
# default 120), BIN (default bin/chiffon), BASE_PORT (default 21000),
# EXTRA_FLAGS (added to every agent, e.g. -insecure).
# Loopback only; everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/chiffon}
BUSY=${BUSY:-4}
DESKTOPS=${DESKTOPS:-20}
DURATION=${DURATION:-120}
PREVOTE=${PREVOTE:-true}
BASE=${BASE_PORT:-21000}
[ -x "$BIN" ] || { echo "elections.sh: no $BIN: run 'make build' first" >&2; exit 1; }
DIR=$(mktemp -d -t chiffon-elections.XXXXXX)
PIDS=()
BUSY_PIDS=()
cleanup() {
  local p
  for p in "${BUSY_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

raft_flags=(-raft-prevote="$PREVOTE")
[ -n "${HB:-}" ] && raft_flags+=(-raft-heartbeat-timeout "$HB")
[ -n "${EL:-}" ] && raft_flags+=(-raft-election-timeout "$EL")
[ -n "${LEASE:-}" ] && raft_flags+=(-raft-lease-timeout "$LEASE")

http() { echo "127.0.0.1:$((BASE + 300 + $1))"; }
declare -A ORCH_PID
for i in 1 2 3; do
  # shellcheck disable=SC2086
  "$BIN" agent -node "orch-$i" -data-dir "$DIR/orch-$i" -role orchestrator -bootstrap-expect 3 \
    -bind "127.0.0.1:$((BASE + i))" -rpc-addr "127.0.0.1:$((BASE + 100 + i))" \
    -raft-addr "127.0.0.1:$((BASE + 200 + i))" -http-addr "$(http $i)" \
    -retry-join "127.0.0.1:$((BASE + 1))" -retry-interval 1s -heartbeat-interval 5s \
    "${raft_flags[@]}" ${EXTRA_FLAGS:-} >"$DIR/orch-$i.log" 2>&1 &
  PIDS+=($!)
  ORCH_PID[$i]=$!
done

# leader: the index (1-3) of the orchestrator the first one that answers
# names as leader.
leader() {
  local i j l
  for i in "$@"; do
    l=$(curl -fsS --max-time 1 "http://$(http "$i")/v1/status/leader" 2>/dev/null |
      sed -n 's/.*"http_addr" *: *"\([^"]*\)".*/\1/p') || continue
    for j in 1 2 3; do [ "$(http $j)" = "$l" ] && { echo "$j"; return 0; }; done
  done
  return 1
}
# term: the highest raft term any live orchestrator reports; empty when
# none answers within 5 s (a machine this overloaded is a finding too).
term() {
  local i t max=
  for i in "$@"; do
    t=$(curl -fsS --max-time 5 "http://$(http "$i")/metrics" 2>/dev/null | sed -n 's/^chiffon_raft_term \([0-9.e+]*\)$/\1/p')
    [ -n "$t" ] || continue
    t=$(printf '%.0f' "$t")
    { [ -z "$max" ] || [ "$t" -gt "$max" ]; } && max=$t
  done
  echo "$max"
}
leader_changes() { cat "$DIR"/orch-*.log | grep -c 'entering leader state' || true; }

for _ in $(seq 300); do leader 1 2 3 >/dev/null && break; sleep 0.1; done
leader 1 2 3 >/dev/null || { echo "elections.sh: no leader after 30 s; see $DIR/orch-*.log" >&2; tail "$DIR"/orch-*.log >&2; exit 1; }
sleep 2 # let the founding election settle

load0=$(cut -d' ' -f1-3 /proc/loadavg)
term0=$(term 1 2 3)
changes0=$(leader_changes)
for _ in $(seq "$BUSY"); do
  sh -c 'while :; do :; done' &
  BUSY_PIDS+=($!)
done
t0=$(date +%s)
for j in $(seq "$DESKTOPS"); do
  # shellcheck disable=SC2086
  "$BIN" agent -node "desk-$j" -data-dir "$DIR/desk-$j" \
    -bind "127.0.0.1:$((BASE + 1000 + j))" -rpc-addr "127.0.0.1:$((BASE + 2000 + j))" \
    -retry-join "127.0.0.1:$((BASE + 1))" -retry-interval 1s -heartbeat-interval 5s \
    -metrics-file scripts/demo/gpu-desktop-1.json ${EXTRA_FLAGS:-} >"$DIR/desk-$j.log" 2>&1 &
  PIDS+=($!)
done
sleep 20
term_boot=$(term 1 2 3)
sleep $((DURATION > 20 ? DURATION - 20 : 0))
term1=$(term 1 2 3)
changes1=$(leader_changes)
load1=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - t0))

# Failover, the loops still running: kill the leader, wait for a survivor
# to name another.
L=$(leader 1 2 3) || L=
failover=none
if [ -n "$L" ]; then
  S=(); for i in 1 2 3; do [ "$i" != "$L" ] && S+=("$i"); done
  kill -KILL "${ORCH_PID[$L]}"
  k0=$(date +%s%N)
  wait "${ORCH_PID[$L]}" 2>/dev/null || true # reap it quietly
  for _ in $(seq 400); do
    nl=$(leader "${S[@]}" 2>/dev/null) && [ "$nl" != "$L" ] && { failover=$(awk -v ns=$(($(date +%s%N) - k0)) 'BEGIN{printf "%.2f", ns/1e9}'); break; }
    sleep 0.02
  done
fi

elections=? per_min=? boot=?
if [ -n "$term0" ] && [ -n "$term1" ]; then
  elections=$((term1 - term0))
  per_min=$(awk -v e="$elections" -v s="$elapsed" 'BEGIN{printf "%.1f", e*60/s}')
fi
[ -n "$term0" ] && [ -n "$term_boot" ] && boot=$((term_boot - term0))
printf 'timings %s/%s/%s prevote=%s busy=%d desktops=%d: %s elections in %d s (%s/min; %s in the first 20 s), %d leader changes, failover %s s, load %s -> %s\n' \
  "${HB:-default}" "${EL:-default}" "${LEASE:-default}" "$PREVOTE" "$BUSY" "$DESKTOPS" \
  "$elections" "$elapsed" "$per_min" "$boot" $((changes1 - changes0)) "$failover" "$load0" "$load1"
