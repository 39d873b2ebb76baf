#!/usr/bin/env bash
# Measures a desktop node's gossip footprint on this machine, loopback only:
#   (a) idle RSS of a chiffon desktop, of a second one that keeps its
#       start-up pages (-trim-startup-pages 0, as desktops ran before
#       that flag) and, in the same run, of a stock `serf agent`, each
#       joined to a seed of its own kind, after IDLE_SECS and again after
#       IDLE_LONG_SECS, split into private (RssAnon) and binary/library
#       (RssFile) pages;
#   (b) CPU time per heartbeat (100ms heartbeat minus a 1h-heartbeat
#       baseline over the same period, hardware probe and metrics file);
#   (c) time from a metrics-file write on one node until every node holds
#       the new tag, at 3 and at 50 nodes (default SWIM timings, 200ms
#       heartbeat on the changing node only);
#   (d) encoded tag size for 0, 1 and 8 GPUs.
# The figures are quoted in docs/PERFORMANCE.md. Every wait has a deadline
# and every process started here is killed on exit.
#
# Usage: scripts/measure-gossip.sh
# Env:   IDLE_SECS (20) IDLE_LONG_SECS (600; 0 skips the second reading)
#        HB_SECS (20) NODES ("3 50"; "" skips (c)) TRIALS (5)
#   IDLE_LONG_SECS=0 scripts/measure-gossip.sh    # without the 10-minute reading
#   NODES= HB_SECS=5 scripts/measure-gossip.sh    # mostly (a), at 20 s and 10 minutes
set -euo pipefail
cd "$(dirname "$0")/.."

IDLE_SECS=${IDLE_SECS:-20}
IDLE_LONG_SECS=${IDLE_LONG_SECS:-600}
HB_SECS=${HB_SECS:-20}
NODES=${NODES-"3 50"}
TRIALS=${TRIALS:-5}
CHANGER_HEARTBEAT=200ms

WORK=$(mktemp -d -t chiffon-measure.XXXXXX)
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  kill_all
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "measure-gossip: $*" >&2; exit 1; }

SERF=$(command -v serf || true)
[ -n "$SERF" ] || SERF="$(go env GOPATH | cut -d: -f1)/bin/serf"
[ -x "$SERF" ] || die "stock serf CLI not found; go install github.com/hashicorp/serf/cmd/serf@v0.11.0"
CHIFFON=$WORK/chiffon
CGO_ENABLED=1 CGO_CFLAGS=${CGO_CFLAGS:-"-O2 -g -Wno-deprecated-declarations"} \
  go build -o "$WORK/chiffon.linked" ./cmd/chiffon
# Both agents run from a plain copy made here, so that their executables sit
# in the page cache the same way: the Go linker writes its output through
# mmap, and on this kernel (ext4, large page-cache folios) a freshly linked
# file is cached in large folios that a process maps whole on its first
# touch. Run straight from the link output, a desktop shows ~4 MiB more
# RssFile than the same bytes copied, which says nothing about the program.
cp "$WORK/chiffon.linked" "$CHIFFON"
rm "$WORK/chiffon.linked"
cp "$SERF" "$WORK/serf"
SERF=$WORK/serf
CLK_TCK=$(getconf CLK_TCK)

# free_port prints a port that no socket uses (TCP or UDP), below the
# ephemeral range so that no outgoing connection grabs it meanwhile.
USED_PORTS=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! ss -Htuan | awk '{print $5}' | grep -q ":$p\$"; then
      USED_PORTS+="$p "
      echo "$p"
      return
    fi
  done
  die "no free port"
}

# A desktop's metrics file; $2 is the free VRAM of its one GPU.
write_metrics() { # path vram_free
  cat >"$1.tmp" <<EOF
{"cpu_load_1min":0.8,"cpu_load_5min":0.7,"cpu_load_15min":0.6,"cpu_cores_physical":16,
 "memory_percent":41.5,"memory_available_gb":37.2,"gpu_type":"nvidia",
 "gpus":[{"index":0,"name":"NVIDIA GeForce RTX 4090","vram_total_gb":24,"vram_free_gb":$2,"utilization_pct":12}]}
EOF
  mv "$1.tmp" "$1" # atomic: a heartbeat never reads half a file
}

LAST_PID=
start_chiffon() { # name log args...
  local name=$1 log=$2; shift 2
  "$CHIFFON" agent -node "$name" -data-dir "$WORK/data/$name" "$@" >"$log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 100ms.
wait_until() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@"; do
    [ $SECONDS -lt $end ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.1
  done
}

# rpc_auth NAME: the -rpc-auth flag for chiffon node NAME's serf RPC, with
# the token the node generated into its data dir at start; nothing before
# that, or for a stock serf agent (no NAME), whose RPC has no token.
rpc_auth() {
  local f="$WORK/data/${1:-none}/serf/rpc-auth"
  if [ -n "${1:-}" ] && [ -f "$f" ]; then echo "-rpc-auth=$(cat "$f")"; fi
}
alive_count() { # rpc-addr [chiffon node name]
  # shellcheck disable=SC2046
  "$SERF" members -rpc-addr "$1" $(rpc_auth "${2:-}") -status alive 2>/dev/null | wc -l
}
has_alive() { [ "$(alive_count "$1" "${3:-}")" -ge "$2" ]; } # rpc-addr count [chiffon node name]

# rss_line PID: "VmRSS MiB (RssAnon MiB private, RssFile MiB binary and libraries)".
rss_line() {
  awk '/^(VmRSS|RssAnon|RssFile):/ {v[$1] = $2 / 1024}
    END {printf "%5.1f MiB (anon %4.1f, file %4.1f)", v["VmRSS:"], v["RssAnon:"], v["RssFile:"]}' "/proc/$1/status"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime
# cpu_ns sums the nanosecond run time of every thread: a finer cross-check
# of the 10 ms ticks above (threads that already exited are not counted).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s}'; }

kill_all() {
  # Waiting on each pid by name keeps bash's "Killed" notices out of the report.
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
SERF_MOD=$(go version -m "$SERF" 2>/dev/null | awk '$1 == "mod" {print $2 "@" $3; exit}')
echo "== $(go version | cut -d' ' -f3-), serf CLI ${SERF_MOD:-unknown} (\"$("$SERF" version | head -1)\"), $(date -u +%Y-%m-%dT%H:%MZ)"

# ---------------------------------------------------------------- (a) RSS
echo
echo "== (a) idle RSS after ${IDLE_SECS}s and ${IDLE_LONG_SECS}s (each node joined to a seed of its kind, default timings)"
mkdir -p "$WORK/data"
write_metrics "$WORK/seed.json" 20
cs=$(free_port); cr=$(free_port)
start_chiffon seed "$WORK/a-seed.log" -bind "127.0.0.1:$cs" -rpc-addr "127.0.0.1:$cr" -metrics-file "$WORK/seed.json"
wait_until 10 "chiffon seed" has_alive "127.0.0.1:$cr" 1 seed
dp=$(free_port); dr=$(free_port)
start_chiffon desktop "$WORK/a-desktop.log" -bind "127.0.0.1:$dp" -rpc-addr "127.0.0.1:$dr" -join "127.0.0.1:$cs"
chiffon_pid=$LAST_PID
kp=$(free_port); kr=$(free_port)
start_chiffon keep "$WORK/a-keep.log" -bind "127.0.0.1:$kp" -rpc-addr "127.0.0.1:$kr" -join "127.0.0.1:$cs" -trim-startup-pages 0
keep_pid=$LAST_PID
ss_=$(free_port); sr=$(free_port)
"$SERF" agent -node serf-seed -bind "127.0.0.1:$ss_" -rpc-addr "127.0.0.1:$sr" >"$WORK/a-serf-seed.log" 2>&1 &
PIDS+=("$!")
wait_until 10 "serf seed" has_alive "127.0.0.1:$sr" 1
np=$(free_port); nr=$(free_port)
"$SERF" agent -node serf-node -bind "127.0.0.1:$np" -rpc-addr "127.0.0.1:$nr" -join "127.0.0.1:$ss_" \
  >"$WORK/a-serf-node.log" 2>&1 &
serf_pid=$!
PIDS+=("$serf_pid")
wait_until 10 "chiffon desktops to join" has_alive "127.0.0.1:$cr" 3 seed
wait_until 10 "serf node to join" has_alive "127.0.0.1:$sr" 2
joined=$SECONDS
# idle_reading SECS: waits until SECS after both joined, then prints both
# processes' RSS and keeps it for the summary.
idle_reading() {
  local left=$(($1 - (SECONDS - joined)))
  [ "$left" -le 0 ] || sleep "$left"
  echo "   after $1 s:"
  echo "     chiffon agent (desktop, hardware probe):     $(rss_line "$chiffon_pid")"
  echo "     the same, -trim-startup-pages 0:             $(rss_line "$keep_pid")"
  echo "     serf agent (stock, same run):                $(rss_line "$serf_pid")"
  IDLE_SUMMARY+=("after $1 s: chiffon $(rss_line "$chiffon_pid"), untrimmed $(rss_line "$keep_pid"), serf $(rss_line "$serf_pid")")
}
IDLE_SUMMARY=()
idle_reading "$IDLE_SECS"
if [ "$IDLE_LONG_SECS" -gt "$IDLE_SECS" ]; then idle_reading "$IDLE_LONG_SECS"; fi
kill_all

# ------------------------------------------------------ (b) CPU/heartbeat
echo
echo "== (b) CPU per heartbeat: -heartbeat-interval 100ms vs 1h, ${HB_SECS}s, standalone nodes"
write_metrics "$WORK/b.json" 20
declare -A BPID
for v in hw-fast hw-idle file-fast file-idle; do
  hb=100ms; [[ $v == *idle ]] && hb=1h
  mf=(); [[ $v == file-* ]] && mf=(-metrics-file "$WORK/b.json")
  start_chiffon "$v" "$WORK/b-$v.log" -bind "127.0.0.1:$(free_port)" -rpc-addr "127.0.0.1:$(free_port)" \
    -heartbeat-interval "$hb" "${mf[@]}"
  BPID[$v]=$LAST_PID
done
for v in "${!BPID[@]}"; do wait_until 10 "$v to start" grep -q 'msg="node started"' "$WORK/b-$v.log"; done
sleep 2 # let start-up work finish before the window opens
declare -A T0 T1 N0 N1 CPU CPUNS
for v in "${!BPID[@]}"; do T0[$v]=$(cpu_ticks "${BPID[$v]}"); N0[$v]=$(cpu_ns "${BPID[$v]}"); done
sleep "$HB_SECS"
for v in "${!BPID[@]}"; do T1[$v]=$(cpu_ticks "${BPID[$v]}"); N1[$v]=$(cpu_ns "${BPID[$v]}"); done
beats=$((HB_SECS * 10))
for src in hw file; do
  fast=$((T1[$src-fast] - T0[$src-fast])); idle=$((T1[$src-idle] - T0[$src-idle]))
  us=$(echo "($fast - $idle) * 1000000 / $CLK_TCK / $beats" | bc -l)
  nsus=$(echo "((${N1[$src-fast]} - ${N0[$src-fast]}) - (${N1[$src-idle]} - ${N0[$src-idle]})) / 1000 / $beats" | bc -l)
  label=hardware; [ $src = file ] && label=metrics-file
  printf '   %-12s fast %4d ticks, idle %4d ticks (1 tick = %d ms), %d heartbeats: %5.0f µs CPU per heartbeat (schedstat: %5.0f µs)\n' \
    "$label" "$fast" "$idle" $((1000 / CLK_TCK)) "$beats" "$us" "$nsus"
  CPU[$src]=$(printf %.0f "$us"); CPUNS[$src]=$(printf %.0f "$nsus")
done
kill_all

# ---------------------------------------------------- (c) propagation
ms_of() { date -u -d "$1" +%s%3N; } # slog time=... → epoch ms
# nth_update_ms LOG NODE N: time of the Nth "EventMemberUpdate: NODE" line
# (serf logs it at debug level in chiffon, hence -log-level debug above).
nth_update_ms() {
  local ts
  ts=$(grep "msg=\"EventMemberUpdate: $2\"" "$1" | sed -n "${3}p" | sed 's/^time=\([^ ]*\).*/\1/')
  ms_of "$ts"
}
update_count() { grep -c "msg=\"EventMemberUpdate: $2\"" "$1" || true; }

declare -A PROP
for n in $NODES; do
  echo
  echo "== (c) tag propagation, $n nodes on 127.0.0.1, default SWIM timings, changer heartbeat $CHANGER_HEARTBEAT"
  kill_all
  rm -rf "$WORK/data" "$WORK"/c-*.log; mkdir -p "$WORK/data"
  declare -a RPC=() LOG=()
  changer=$(printf 'n%02d' $((n - 1)))
  seedport=
  for i in $(seq 0 $((n - 1))); do
    name=$(printf 'n%02d' "$i")
    write_metrics "$WORK/c-$name.json" 20
    gp=$(free_port); rp=$(free_port)
    RPC[i]=127.0.0.1:$rp; LOG[i]=$WORK/c-$name.log
    hb=1h; [ "$name" = "$changer" ] && hb=$CHANGER_HEARTBEAT
    join=(); [ -n "$seedport" ] && join=(-join "127.0.0.1:$seedport")
    start_chiffon "$name" "${LOG[i]}" -log-level debug -bind "127.0.0.1:$gp" -rpc-addr "${RPC[i]}" \
      -metrics-file "$WORK/c-$name.json" -heartbeat-interval "$hb" "${join[@]}"
    if [ -z "$seedport" ]; then
      seedport=$gp
      wait_until 10 "seed n00" has_alive "${RPC[0]}" 1 n00
    fi
  done
  wait_until 60 "$n alive on the seed" has_alive "${RPC[0]}" "$n" n00
  for i in $(seq 0 $((n - 1))); do wait_until 30 "$n alive on node $i" has_alive "${RPC[i]}" "$n" "$(printf 'n%02d' "$i")"; done
  results=()
  for trial in $(seq 1 "$TRIALS"); do
    free=$((trial + 1))
    declare -a BEFORE=()
    for i in $(seq 0 $((n - 1))); do BEFORE[i]=$(update_count "${LOG[i]}" "$changer"); done
    t0=$(date +%s%3N)
    write_metrics "$WORK/c-$changer.json" "$free"
    all_seen() {
      local i
      for i in $(seq 0 $((n - 1))); do
        [ "$(update_count "${LOG[i]}" "$changer")" -gt "${BEFORE[i]}" ] || return 1
      done
    }
    wait_until 30 "every node to log the update of $changer" all_seen
    last=0
    for i in $(seq 0 $((n - 1))); do
      t=$(nth_update_ms "${LOG[i]}" "$changer" $((BEFORE[i] + 1)))
      [ "$t" -gt "$last" ] && last=$t
    done
    pick=$(nth_update_ms "${LOG[n - 1]}" "$changer" $((BEFORE[n - 1] + 1)))
    # Cross-check through every node's serf RPC with the stock CLI.
    want="vram=24/$free/$free/1"
    for i in $(seq 0 $((n - 1))); do
      "$SERF" members -rpc-addr "${RPC[i]}" "$(rpc_auth "$(printf 'n%02d' "$i")")" -name "$changer" -detailed | grep -q "$want" ||
        die "node $i's serf RPC does not show $want for $changer"
    done
    printf '   trial %d: heartbeat picked the file up after %4d ms; last of %d nodes had it after %4d ms (gossip %4d ms)\n' \
      "$trial" $((pick - t0)) "$n" $((last - t0)) $((last - pick))
    results+=("$((last - t0)):$((last - pick))")
  done
  totals=$(printf '%s\n' "${results[@]}" | cut -d: -f1 | sort -n | tr '\n' ' ')
  gossips=$(printf '%s\n' "${results[@]}" | cut -d: -f2 | sort -n | tr '\n' ' ')
  echo "   file write → all nodes (ms, sorted): $totals"
  echo "   heartbeat pickup → all nodes (ms, sorted): $gossips"
  PROP[$n]="$totals| gossip only: $gossips"
  kill_all
done

# ---------------------------------------------------- (d) tag size
echo
echo "== (d) encoded tag size (go test ./gossip -run TestEncodedSize_Table -v)"
go test -count=1 ./gossip -run TestEncodedSize_Table -v | grep -o 'desktop with .*bytes' | sed 's/^/   /'

echo
echo "== summary"
for line in "${IDLE_SUMMARY[@]}"; do echo "   idle RSS $line"; done
echo "   CPU per heartbeat (stat; schedstat): hardware probe ${CPU[hw]}; ${CPUNS[hw]} µs, metrics file ${CPU[file]}; ${CPUNS[file]} µs"
for n in $NODES; do echo "   propagation at $n nodes (ms): ${PROP[$n]}"; done
