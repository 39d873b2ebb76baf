#!/usr/bin/env bash
# Work dispatch throughput, in one run on one private broker:
#   (a) the broker alone: a raw amqp091-go publish (confirms) → consume
#       round trip, N messages;
#   (b) Chiffon end to end: N work requests published (confirms, reply_to)
#       until all N results arrived, with a trivial handler on 3 desktops,
#       once per handler mode (MODES):
#         exec        a process per item: sh -c 'cat >/dev/null; echo ok'
#         persistent  long-lived sh loops answering one line per item
#                     (-work-handler-mode persistent)
#   (c) that handler alone, run as the desktops run it, without Chiffon:
#       the ceiling the handler itself sets on this machine.
# Prints the rates and the ratios, medians over ROUNDS rounds, and the CPU
# each process spent per 1,000 items in the end-to-end rounds.
#   (d) placement latency, per mode after its rounds: publish → handler
#       start (the result's started_at, the desktop runner's stamp right
#       before it hands the item to the handler) and publish → result,
#       p50/p99/max, with `benchdispatch -mode latency`: idle (one item at
#       a time, LATENCY_N items) and open loop at each other rate of
#       LATENCY_RATES for LATENCY_SECS. The persistent mode runs
#       LATENCY_RATES ("0 300"); exec runs EXEC_LATENCY_RATES ("0"), since
#       a process per item peaks well below 300 items/s on this machine
#       and an open loop beyond capacity only measures a growing queue.
# TLS says how the cluster is secured, one fresh cluster per setting, in
# the same run on the same broker:
#   off   no TLS material: the leader delivers work over plain HTTP
#   on    a cluster CA from `chiffon tls`: orchestrators with server
#         certificates, desktops with client certificates, work delivered
#         over HTTPS with mutual TLS (the API is HTTPS too)
#   both  off, then on: the cost of TLS, measured side by side
#         ("on off" runs them the other way round, to see drift in the
#         machine's load)
#
#   scripts/bench-dispatch.sh   (N=2000 ORCHS=3 CONCURRENCY=8 ROUNDS=3 MODES="exec persistent" TLS=off
#                                LATENCY_N=200 LATENCY_SECS=10 LATENCY_RATES="0 300" EXEC_LATENCY_RATES=0)
#   ROUNDS=0 MODES=persistent scripts/bench-dispatch.sh
#       placement latency only (no throughput rounds)
#   TLS=both MODES=persistent scripts/bench-dispatch.sh
#   PROFILE=DIR scripts/bench-dispatch.sh
#       also writes a CPU profile of each orchestrator (its HTTP port in
#       the name) over the first end-to-end round, PROFILE_SECONDS long
#       (10): go tool pprof -top DIR/orch-PORT.pprof
#
# Needs Debian's rabbitmq-server (see scripts/rabbitmq.sh) and Go. Loopback
# only; everything it starts is killed on exit; each step is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
ORCHS=${ORCHS:-3}
CONCURRENCY=${CONCURRENCY:-8}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-exec persistent}
TLS=${TLS:-off}
LATENCY_N=${LATENCY_N:-200}
LATENCY_SECS=${LATENCY_SECS:-10}
LATENCY_RATES=${LATENCY_RATES-0 300}
EXEC_LATENCY_RATES=${EXEC_LATENCY_RATES-0}
case $ORCHS in 1 | 3) ;; *) echo "bench-dispatch.sh: ORCHS must be 1 or 3" >&2; exit 2 ;; esac
SECS=$TLS
[ "$TLS" = both ] && SECS="off on"
for sec in $SECS; do
  case $sec in off | on) ;; *) echo "bench-dispatch.sh: TLS is off, on, both or a list such as \"on off\", not $TLS" >&2; exit 2 ;; esac
done

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
for m in $MODES; do
  case $m in exec | persistent) ;; *) echo "bench-dispatch.sh: MODES are exec and persistent, not $m" >&2; exit 2 ;; esac
done
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


# The trivial handlers. The persistent one uses shell builtins only (no
# process per item): it answers each request line with its work_id.
cat >"$WORK/persistent-handler.sh" <<'SH'
while IFS= read -r line; do
  id=${line#*\"work_id\":\"}
  printf '{"work_id":"%s","exit_code":0,"output":"ok"}\n' "${id%%\"*}"
done
SH
handler() {
  case $1 in
  exec) echo 'cat >/dev/null; echo ok' ;;
  persistent) echo "exec sh $WORK/persistent-handler.sh" ;;
  esac
}

# online_desktops MODE counts the desktops of MODE that an orchestrator
# lists as online.
online_desktops() {
  local a n
  for a in "${ORCH_HTTP[@]}"; do
    n=$(curl -fsS --max-time 1 "${CURL_TLS[@]}" "$SCHEME://$a/agents?status=online" 2>/dev/null | grep -o "\"desk-$1-[0-9]\"" | sort -u | wc -l) || continue
    echo "$n"
    return 0
  done
  echo 0
}

# start_orchestrators SEC starts ORCHS orchestrators on 127.0.0.1, with
# fresh data dirs, secured as SEC (off, on) says; desktops go on
# 127.0.0.2-4. Gossip is not encrypted in either setting (-insecure lets an
# orchestrator start so): what is measured is HTTP with and without TLS.
start_orchestrators() {
  local i g r f h targs
  ORCH_HTTP=() OPIDS=() JOIN=
  for i in $(seq 1 "$ORCHS"); do
    ports 4
    g=${P[0]} r=${P[1]} f=${P[2]} h=${P[3]}
    [ -z "$JOIN" ] && JOIN=127.0.0.1:$g
    targs=$(tls_args "$1" server "orch-$i") # here, not in the background job: certificates are made one at a time
    # shellcheck disable=SC2086 # targs is flags and paths without spaces
    "$WORK/chiffon" agent -node "orch-$i" -data-dir "$WORK/tls-$1/orch-$i" -role orchestrator -bootstrap-expect "$ORCHS" \
      -bind "127.0.0.1:$g" -rpc-addr "127.0.0.1:$r" -raft-addr "127.0.0.1:$f" -http-addr "127.0.0.1:$h" \
      -retry-join "$JOIN" -retry-interval 200ms -amqp-url "$URL" -log-level "${LOG_LEVEL:-warn}" ${PROFILE:+-enable-debug} \
      -insecure $targs >"$WORK/tls-$1/orch-$i.log" 2>&1 &
    PIDS+=($!)
    OPIDS+=($!)
    ORCH_HTTP+=("127.0.0.1:$h")
  done
  echo "TLS $1: orchestrators (HTTP): ${ORCH_HTTP[*]}; logs in $WORK/tls-$1" >&2
}

# tls_args SEC ROLE NODE prints the -tls-* flags of NODE (nothing for
# SEC=off), making its certificate with `chiffon tls cert create`.
PKI=$WORK/pki
tls_args() {
  [ "$1" = on ] || return 0
  if [ ! -f "$PKI/chiffon-agent-ca.pem" ]; then
    mkdir -p "$PKI"
    "$WORK/chiffon" tls ca create -out-dir "$PKI" >/dev/null
  fi
  [ -f "$PKI/chiffon-$2-$3.pem" ] || "$WORK/chiffon" tls cert create "-$2" -node "$3" -out-dir "$PKI" >/dev/null
  echo "-tls-ca $PKI/chiffon-agent-ca.pem -tls-cert $PKI/chiffon-$2-$3.pem -tls-key $PKI/chiffon-$2-$3-key.pem"
}

cpu() { awk '{printf "%.2f", ($14+$15+$16+$17)/100}' "/proc/$1/stat" 2>/dev/null || echo 0; }
BEAM=
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
SUMMARY=()
LATENCY=()
CURLS=()
for sec in $SECS; do
  mkdir -p "$WORK/tls-$sec"
  SCHEME=http CURL_TLS=()
  if [ "$sec" = on ]; then
    # The API is HTTPS with a client certificate once orchestrators have
    # TLS material; curl presents one of its own.
    read -r _ ca _ cert _ key <<<"$(tls_args on client bench-curl)"
    SCHEME=https CURL_TLS=(--cacert "$ca" --cert "$cert" --key "$key")
  fi
  start_orchestrators "$sec"
  for mode in $MODES; do
    # Three desktops in this handler mode, on 127.0.0.2-4.
    DPIDS=()
    for i in 1 2 3; do
      ip=127.0.0.$((i + 1))
      ports 3
      g=${P[0]} r=${P[1]} w=${P[2]}
      targs=$(tls_args "$sec" client "desk-$mode-$i")
      # shellcheck disable=SC2086 # targs is flags and paths without spaces
      "$WORK/chiffon" agent -node "desk-$mode-$i" -data-dir "$WORK/tls-$sec/desk-$mode-$i" -bind "$ip:$g" -rpc-addr "$ip:$r" \
        -retry-join "$JOIN" -retry-interval 200ms -metrics-file scripts/demo/gpu-desktop-1.json \
        -work-handler "$(handler "$mode")" -work-handler-mode "$mode" -work-addr "$ip:$w" -work-concurrency "$CONCURRENCY" \
        -log-level "${LOG_LEVEL:-warn}" $targs >"$WORK/tls-$sec/desk-$mode-$i.log" 2>&1 &
      PIDS+=($!)
      DPIDS+=($!)
    done
    deadline=$((SECONDS + 60))
    until [ "$(online_desktops "$mode")" -eq 3 ]; do
      [ $SECONDS -lt $deadline ] || { echo "bench-dispatch.sh: the $mode desktops (TLS $sec) did not come up in 60 s; logs in $WORK/tls-$sec" >&2; KEEP=1; exit 1; }
      sleep 0.2
    done
    [ -n "$BEAM" ] || BEAM=$(pgrep -u rabbitmq -f "beam.smp.*$BROKER" | head -1 || true)

    # Warm-up: one small end-to-end run (connections, first placements).
    timeout 150 "$WORK/benchdispatch" -amqp-url "$URL" -mode e2e -n 100 >/dev/null

    raw=() e2e=() alone=()
    declare -A used=()
    watched=("${OPIDS[@]}" "${DPIDS[@]}")
    for r in $(seq 1 "$ROUNDS"); do
      a=$(timeout 150 "$WORK/benchdispatch" -amqp-url "$URL" -mode raw -n "$N")
      if [ -n "${PROFILE:-}" ] && [ "$r" = 1 ]; then
        # CPU profiles of every orchestrator during the first end-to-end round.
        mkdir -p "$PROFILE"
        for o in "${ORCH_HTTP[@]}"; do
          curl -fsS --max-time 30 "${CURL_TLS[@]}" -o "$PROFILE/$mode-tls-$sec-orch-${o##*:}.pprof" "$SCHEME://$o/debug/pprof/profile?seconds=${PROFILE_SECONDS:-10}" &
          CURLS+=($!)
        done
      fi
      declare -A before=()
      for p in "${watched[@]}" ${BEAM:+"$BEAM"}; do before[$p]=$(cpu "$p"); done
      b=$(timeout 150 "$WORK/benchdispatch" -amqp-url "$URL" -mode e2e -n "$N")
      for p in "${watched[@]}" ${BEAM:+"$BEAM"}; do
        used[$p]=$(awk -v u="${used[$p]:-0}" -v a="$(cpu "$p")" -v b="${before[$p]}" 'BEGIN {printf "%.2f", u + a - b}')
      done
      for p in "${CURLS[@]}"; do wait "$p" || true; done
      CURLS=()
      # The handler alone, as many at once as the desktops run (the cluster
      # is idle meanwhile).
      if [ "$mode" = exec ]; then
        c=$(timeout 150 "$WORK/benchdispatch" -mode spawn -n "$N" -concurrency $((3 * CONCURRENCY)) -handler "$(handler exec)")
      else
        c=$(timeout 150 "$WORK/benchdispatch" -mode lines -n "$N" -concurrency $((3 * CONCURRENCY)) -handler "$(handler persistent)")
      fi
      echo "$mode TLS $sec round $r: $a | $b | $c"
      raw+=("$(awk '{print $(NF-1)}' <<<"$a")")
      e2e+=("$(awk '{print $(NF-1)}' <<<"$b")")
      alone+=("$(awk '{print $(NF-1)}' <<<"$c")")
    done
    # (d) placement latency on this cluster, now idle again.
    rates=$LATENCY_RATES
    [ "$mode" = exec ] && rates=$EXEC_LATENCY_RATES
    for rate in $rates; do
      ln=$LATENCY_N
      [ "$rate" = 0 ] || ln=$(awk -v r="$rate" -v s="$LATENCY_SECS" 'BEGIN {print int(r * s)}')
      l=$(timeout 150 "$WORK/benchdispatch" -amqp-url "$URL" -mode latency -rate "$rate" -n "$ln")
      echo "$mode TLS $sec $l (load average $(cut -d' ' -f1-3 /proc/loadavg))"
      LATENCY+=("$(printf '%-10s TLS %-3s  %s' "$mode" "$sec" "$l")")
    done
    if [ "$ROUNDS" -lt 1 ]; then
      kill -TERM "${DPIDS[@]}" 2>/dev/null || true
      for p in "${DPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
      unset used
      continue
    fi
    RAW=$(median "${raw[@]}") E2E=$(median "${e2e[@]}") ALONE=$(median "${alone[@]}")
    SUMMARY+=("$(printf '%-10s TLS %-3s  raw amqp091-go %8s msg/s | chiffon end to end %7s items/s | handler alone %8s items/s | e2e/raw %5.1f %% | e2e/handler %5.1f %%' \
      "$mode" "$sec" "$RAW" "$E2E" "$ALONE" "$(awk -v a="$E2E" -v b="$RAW" 'BEGIN {print 100 * a / b}')" "$(awk -v a="$E2E" -v b="$ALONE" 'BEGIN {print 100 * a / b}')")")
    line="CPU ms per item in the end-to-end rounds:"
    for p in "${watched[@]}"; do
      name=$(ps -o args= -p "$p" | awk '{for (i=1;i<=NF;i++) if ($i=="-node") print $(i+1)}')
      line+=" $name $(awk -v u="${used[$p]}" -v n=$((N * ROUNDS)) 'BEGIN {printf "%.2f", 1000 * u / n}')"
    done
    [ -n "$BEAM" ] && line+=" broker $(awk -v u="${used[$BEAM]}" -v n=$((N * ROUNDS)) 'BEGIN {printf "%.2f", 1000 * u / n}')"
    SUMMARY+=("            $line (desktops include their handlers)")
    unset used before
    # Graceful stop: the desktops leave, the next mode's take over.
    kill -TERM "${DPIDS[@]}" 2>/dev/null || true
    for p in "${DPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  done
  # This setting's orchestrators go before the next setting's start.
  kill -TERM "${OPIDS[@]}" 2>/dev/null || true
  for p in "${OPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
done

echo "N=$N ORCHS=$ORCHS desktops=3 CONCURRENCY=$CONCURRENCY rounds=$ROUNDS TLS=$TLS (medians), $(nproc) CPUs"
[ ${#SUMMARY[@]} -eq 0 ] || printf '%s\n' "${SUMMARY[@]}"
[ ${#LATENCY[@]} -eq 0 ] || printf '%s\n' "${LATENCY[@]}"
