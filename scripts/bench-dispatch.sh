#!/usr/bin/env bash
# Work dispatch throughput, in one run on one private broker:
#   (a) the broker alone: a raw amqp091-go publish (confirms) → consume
#       round trip, N messages;
#   (b) Chiffon end to end: N work requests published (confirms, reply_to)
#       until all N results arrived, with a trivial handler
#       (`cat >/dev/null; echo ok`) on 3 desktops;
#   (c) that handler alone, spawned as the desktops spawn it, without
#       Chiffon: the ceiling process creation sets on this machine.
# Prints the rates and the ratios, medians over ROUNDS rounds, and the CPU
# each process used.
#
#   scripts/bench-dispatch.sh          (N=2000 ORCHS=3 CONCURRENCY=8 ROUNDS=3)
#
# Needs Debian's rabbitmq-server (see scripts/rabbitmq.sh) and Go. Loopback
# only; everything it starts is killed on exit; each step is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
ORCHS=${ORCHS:-3}
CONCURRENCY=${CONCURRENCY:-8}
ROUNDS=${ROUNDS:-3}
HANDLER='cat >/dev/null; echo ok'
case $ORCHS in 1 | 3) ;; *) echo "bench-dispatch.sh: ORCHS must be 1 or 3" >&2; exit 2 ;; esac

WORK=$(mktemp -d -t chiffon-bench-dispatch.XXXXXX)
chmod 755 "$WORK" # the broker runs as the rabbitmq user
BROKER=$WORK/rabbitmq
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  scripts/rabbitmq.sh stop "$BROKER" >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

USED=" "
# ports N sets P to N ports that no socket on this machine uses now, below
# the kernel's ephemeral range (32768+) so that no outgoing connection takes
# one before a node binds it, and not handed out before by this script.
ports() {
  local p
  P=()
  while [ ${#P[@]} -lt "$1" ]; do
    for _ in $(seq 1 500); do
      p=$((20000 + RANDOM % 12000))
      case $USED in *" $p "*) continue ;; esac
      ss -Htanu "sport = :$p" | grep -q . && continue
      USED="$USED$p "
      P+=("$p")
      continue 2
    done
    echo "bench-dispatch.sh: no free port" >&2; exit 1
  done
}

echo "building bin/chiffon and benchdispatch ..." >&2
go build -o "$WORK/chiffon" ./cmd/chiffon
go build -o "$WORK/benchdispatch" ./scripts/benchdispatch
# The broker's ports come from ports (below the ephemeral range); a start
# that fails anyway (a port taken meanwhile) is retried in a clean dir.
URL=
for _ in 1 2 3; do
  ports 2
  if URL=$(NODE_PORT=${P[0]} DIST_PORT=${P[1]} timeout 120 scripts/rabbitmq.sh start "$BROKER" 2>"$WORK/broker-start.err"); then
    break
  fi
  URL=
  scripts/rabbitmq.sh stop "$BROKER" >/dev/null 2>&1 || true
  rm -rf "$BROKER"
done
[ -n "$URL" ] || { echo "bench-dispatch.sh: the broker did not start:" >&2; tail -n 30 "$WORK/broker-start.err" >&2; exit 1; }
echo "broker $URL" >&2

# Orchestrators on 127.0.0.1, desktops on 127.0.0.2-4.
ORCH_HTTP=()
JOIN=
for i in $(seq 1 "$ORCHS"); do
  ports 4
  g=${P[0]} r=${P[1]} f=${P[2]} h=${P[3]}
  [ -z "$JOIN" ] && JOIN=127.0.0.1:$g
  "$WORK/chiffon" agent -node "orch-$i" -data-dir "$WORK/orch-$i" -role orchestrator -bootstrap-expect "$ORCHS" \
    -bind "127.0.0.1:$g" -rpc-addr "127.0.0.1:$r" -raft-addr "127.0.0.1:$f" -http-addr "127.0.0.1:$h" \
    -retry-join "$JOIN" -retry-interval 200ms -amqp-url "$URL" -log-level "${LOG_LEVEL:-warn}" >"$WORK/orch-$i.log" 2>&1 &
  PIDS+=($!)
  ORCH_HTTP+=("127.0.0.1:$h")
done
for i in 1 2 3; do
  ip=127.0.0.$((i + 1))
  ports 3
  g=${P[0]} r=${P[1]} w=${P[2]}
  "$WORK/chiffon" agent -node "desk-$i" -data-dir "$WORK/desk-$i" -bind "$ip:$g" -rpc-addr "$ip:$r" \
    -retry-join "$JOIN" -retry-interval 200ms -metrics-file scripts/demo/gpu-desktop-1.json \
    -work-handler "$HANDLER" -work-addr "$ip:$w" -work-concurrency "$CONCURRENCY" \
    -log-level "${LOG_LEVEL:-warn}" >"$WORK/desk-$i.log" 2>&1 &
  PIDS+=($!)
done

echo "orchestrators (HTTP): ${ORCH_HTTP[*]}; logs in $WORK" >&2

# Ready: a leader, and all 3 desktops online in its registry.
ready() {
  local a n
  for a in "${ORCH_HTTP[@]}"; do
    n=$(curl -fsS --max-time 1 "http://$a/agents?status=online" 2>/dev/null | grep -o '"desk-[0-9]"' | sort -u | wc -l) || continue
    [ "$n" -eq 3 ] && return 0
  done
  return 1
}
deadline=$((SECONDS + 60))
until ready; do
  [ $SECONDS -lt $deadline ] || { echo "bench-dispatch.sh: the cluster did not come up in 60 s; logs in $WORK" >&2; KEEP=1; exit 1; }
  sleep 0.2
done

# Warm-up: one small end-to-end run (connections, first placements).
timeout 150 "$WORK/benchdispatch" -amqp-url "$URL" -mode e2e -n 100 >/dev/null

raw=() e2e=() spn=()
for r in $(seq 1 "$ROUNDS"); do
  a=$(timeout 150 "$WORK/benchdispatch" -amqp-url "$URL" -mode raw -n "$N")
  b=$(timeout 150 "$WORK/benchdispatch" -amqp-url "$URL" -mode e2e -n "$N")
  # The handler alone, as many at once as the desktops run (the cluster
  # is idle meanwhile): the ceiling the handler sets on this machine.
  c=$(timeout 150 "$WORK/benchdispatch" -mode spawn -n "$N" -concurrency $((3 * CONCURRENCY)) -handler "$HANDLER")
  echo "round $r: $a | $b | $c"
  raw+=("$(awk '{print $(NF-1)}' <<<"$a")")
  e2e+=("$(awk '{print $(NF-1)}' <<<"$b")")
  spn+=("$(awk '{print $(NF-1)}' <<<"$c")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
RAW=$(median "${raw[@]}") E2E=$(median "${e2e[@]}") SPN=$(median "${spn[@]}")
echo "N=$N ORCHS=$ORCHS desktops=3 CONCURRENCY=$CONCURRENCY rounds=$ROUNDS (medians), $(nproc) CPUs"
echo "raw amqp091-go publish→consume: $RAW msg/s"
echo "chiffon end to end:             $E2E items/s"
echo "handler alone (sh -c, no chiffon): $SPN runs/s"
awk -v a="$E2E" -v b="$RAW" 'BEGIN {printf "ratio end-to-end / raw:         %.1f %%\n", 100 * a / b}'
awk -v a="$E2E" -v b="$SPN" 'BEGIN {printf "ratio end-to-end / handler alone: %.0f %%\n", 100 * a / b}'
# Where the CPU went over the whole run (warm-up and the raw rounds included).
echo "CPU seconds by process (whole run):"
for p in "${PIDS[@]}"; do
  printf '  %-8s %s\n' "$(ps -o args= -p "$p" | awk '{for (i=1;i<=NF;i++) if ($i=="-node") print $(i+1)}')" \
    "$(awk '{printf "%.1f", ($14+$15+$16+$17)/100}' "/proc/$p/stat")"
done
b=$(pgrep -u rabbitmq -f "beam.smp.*$BROKER" | head -1 || true)
[ -n "$b" ] && printf '  %-8s %s\n' broker "$(awk '{printf "%.1f", ($14+$15)/100}' "/proc/$b/stat")"
