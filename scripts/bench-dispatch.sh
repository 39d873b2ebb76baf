#!/usr/bin/env bash
# Work dispatch throughput, in one run on one private broker:
#   (a) the broker alone: a raw amqp091-go publish (confirms) → consume
#       round trip, N messages;
#   (b) Chiffon end to end: N work requests published (confirms, reply_to)
#       until all N results arrived, with a trivial handler
#       (`cat >/dev/null; echo ok`) on 3 desktops.
# Prints both rates and their ratio.
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

free_port() { # a TCP (and UDP) port free on $1 now
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if ! ss -Hltun "sport = :$p" | grep -q .; then echo "$p"; return; fi
  done
  echo "no free port" >&2; exit 1
}

echo "building bin/chiffon and benchdispatch ..." >&2
go build -o "$WORK/chiffon" ./cmd/chiffon
go build -o "$WORK/benchdispatch" ./scripts/benchdispatch
URL=$(timeout 120 scripts/rabbitmq.sh start "$BROKER")
echo "broker $URL" >&2

# Orchestrators on 127.0.0.1, desktops on 127.0.0.2-4.
ORCH_HTTP=()
JOIN=
for i in $(seq 1 "$ORCHS"); do
  g=$(free_port 127.0.0.1) r=$(free_port 127.0.0.1) f=$(free_port 127.0.0.1) h=$(free_port 127.0.0.1)
  [ -z "$JOIN" ] && JOIN=127.0.0.1:$g
  "$WORK/chiffon" agent -node "orch-$i" -data-dir "$WORK/orch-$i" -role orchestrator -bootstrap-expect "$ORCHS" \
    -bind "127.0.0.1:$g" -rpc-addr "127.0.0.1:$r" -raft-addr "127.0.0.1:$f" -http-addr "127.0.0.1:$h" \
    -retry-join "$JOIN" -retry-interval 200ms -amqp-url "$URL" -log-level warn >"$WORK/orch-$i.log" 2>&1 &
  PIDS+=($!)
  ORCH_HTTP+=("127.0.0.1:$h")
done
for i in 1 2 3; do
  ip=127.0.0.$((i + 1))
  g=$(free_port "$ip") r=$(free_port "$ip") w=$(free_port "$ip")
  "$WORK/chiffon" agent -node "desk-$i" -data-dir "$WORK/desk-$i" -bind "$ip:$g" -rpc-addr "$ip:$r" \
    -retry-join "$JOIN" -retry-interval 200ms -metrics-file scripts/demo/gpu-desktop-1.json \
    -work-handler 'cat >/dev/null; echo ok' -work-addr "$ip:$w" -work-concurrency "$CONCURRENCY" \
    -log-level warn >"$WORK/desk-$i.log" 2>&1 &
  PIDS+=($!)
done

# Ready: a leader, and all 3 desktops online in its registry.
ready() {
  local a n
  for a in "${ORCH_HTTP[@]}"; do
    n=$(curl -fsS --max-time 1 "http://$a/agents?status=online" 2>/dev/null | grep -o '"desk-[0-9]"' | sort -u | wc -l) || continue
    [ "$n" -eq 3 ] && return 0
  done
  return 1
}
for _ in $(seq 300); do ready && break; sleep 0.1; done
ready || { echo "bench-dispatch.sh: the cluster did not come up; logs in $WORK" >&2; KEEP=1; exit 1; }

# Warm-up: one small end-to-end run (connections, first placements).
timeout 150 "$WORK/benchdispatch" -amqp-url "$URL" -mode e2e -n 100 >/dev/null

raw=() e2e=()
for r in $(seq 1 "$ROUNDS"); do
  a=$(timeout 150 "$WORK/benchdispatch" -amqp-url "$URL" -mode raw -n "$N")
  b=$(timeout 150 "$WORK/benchdispatch" -amqp-url "$URL" -mode e2e -n "$N")
  echo "round $r: $a | $b"
  raw+=("$(awk '{print $(NF-1)}' <<<"$a")")
  e2e+=("$(awk '{print $(NF-1)}' <<<"$b")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
RAW=$(median "${raw[@]}") E2E=$(median "${e2e[@]}")
echo "N=$N ORCHS=$ORCHS desktops=3 CONCURRENCY=$CONCURRENCY rounds=$ROUNDS (medians)"
echo "raw amqp091-go publish→consume: $RAW msg/s"
echo "chiffon end to end:             $E2E items/s"
awk -v a="$E2E" -v b="$RAW" 'BEGIN {printf "ratio end-to-end / raw:         %.1f %%\n", 100 * a / b}'
