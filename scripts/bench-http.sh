#!/usr/bin/env bash
# bench-http.sh — HTTP API throughput against a bare net/http baseline.
#
# In one run on one machine: wrk against (1) a bare net/http handler that
# returns a fixed ~200-byte JSON body, (2) GET available-capacity on a
# FOLLOWER of a 3-node raft cluster holding 1,000 agents (10 % match) in
# the default mode (forwarded to the leader) and (3) with ?stale (answered
# by the follower), then (4, 5) the same two over HTTPS (tls-default,
# tls-stale: the follower forwards to the leader over mutual TLS). The
# server side is scripts/benchserver (one process: consensus over real TCP
# on loopback, a plain and a TLS api.Server per node, one registry).
# wrk presents no client certificate, so the TLS servers verify one only
# when given; with keep-alive the handshake is paid once per connection.
#
# Goals: stale >= 50 % and default >= 25 % of the bare handler's req/s,
# p99 < 10 ms at 32 connections. Results go to docs/PERFORMANCE.md by hand.
#
# The three targets are measured in ROUNDS interleaved rounds and the
# median of each is reported, so that a burst of other work on a shared
# machine does not decide a ratio.
#
# Env: DURATION (10s), CONNS (32), THREADS (2), AGENTS (1000), ROUNDS (3).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
AGENTS=${AGENTS:-1000}
ROUNDS=${ROUNDS:-3}
QUERY='/agents/available-capacity?min_gpu_vram_gb=16&min_cpu_cores=4'

if ! command -v wrk >/dev/null; then
	echo "bench-http: installing wrk (Debian package)" >&2
	SUDO=""
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq >&2
	$SUDO apt-get install -y -qq wrk >&2
fi

tmp=$(mktemp -d)
pid=""
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/benchserver" ./scripts/benchserver
"$tmp/benchserver" -agents "$AGENTS" >"$tmp/addrs" 2>"$tmp/server.log" &
pid=$!

# Wait (bounded) for the cluster to come up and print its addresses.
for _ in $(seq 1 300); do
	grep -q '^READY$' "$tmp/addrs" && break
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "bench-http: benchserver died:" >&2
		cat "$tmp/server.log" >&2
		exit 1
	fi
	sleep 0.2
done
grep -q '^READY$' "$tmp/addrs" || { echo "bench-http: benchserver not ready after 60 s" >&2; exit 1; }
BARE=$(sed -n 's/^BARE=//p' "$tmp/addrs")
FOLLOWER=$(sed -n 's/^FOLLOWER=//p' "$tmp/addrs")
TLS_FOLLOWER=$(sed -n 's/^TLS_FOLLOWER=//p' "$tmp/addrs")

# run NAME URL: runs wrk once, prints a summary line and appends
# "NAME RPS P99MS" to $tmp/results.
run() {
	local name=$1 url=$2 out="$tmp/$1.txt"
	wrk -t"$THREADS" -c"$CONNS" -d2s "$url" >/dev/null # warm-up: connections, pools, views
	wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" >"$out"
	local rps p99 bad errs xfer
	rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
	p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' "$out")
	bad=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
	errs=$(awk '/Socket errors:/ {print}' "$out")
	xfer=$(awk '/^Transfer\/sec:/ {print $2}' "$out")
	printf '  %-8s %10s req/s  p99 %7.2f ms  %9s/s  non-2xx %s %s\n' "$name" "$rps" "$p99" "$xfer" "${bad:-0}" "$errs"
	echo "$name $rps $p99" >>"$tmp/results"
}

echo "bench-http: wrk -t$THREADS -c$CONNS -d$DURATION --latency, $ROUNDS rounds; $AGENTS agents; query $QUERY; $(nproc) CPUs"
for round in $(seq 1 "$ROUNDS"); do
	echo "round $round (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	run bare "$BARE/"
	run default "$FOLLOWER$QUERY"
	run stale "$FOLLOWER$QUERY&stale"
	run tls-default "$TLS_FOLLOWER$QUERY"
	run tls-stale "$TLS_FOLLOWER$QUERY&stale"
done

# median NAME COLUMN: the median of a column of one target's rounds.
median() {
	awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$tmp/results" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}
BARE_RPS=$(median bare 2)
DEF_RPS=$(median default 2)
STALE_RPS=$(median stale 2)
awk -v b="$BARE_RPS" -v d="$DEF_RPS" -v s="$STALE_RPS" \
	-v bp="$(median bare 3)" -v dp="$(median default 3)" -v sp="$(median stale 3)" 'BEGIN {
	printf "medians: bare %.0f req/s (p99 %.2f ms), default %.0f req/s (p99 %.2f ms), stale %.0f req/s (p99 %.2f ms)\n", b, bp, d, dp, s, sp
	printf "ratios: stale/bare %.0f %% (goal >= 50 %%), default/bare %.0f %% (goal >= 25 %%); p99 goal < 10 ms\n", 100*s/b, 100*d/b
}'
awk -v d="$DEF_RPS" -v s="$STALE_RPS" -v td="$(median tls-default 2)" -v ts="$(median tls-stale 2)" \
	-v tdp="$(median tls-default 3)" -v tsp="$(median tls-stale 3)" 'BEGIN {
	printf "TLS: default %.0f req/s (p99 %.2f ms, %.0f %% of plain), stale %.0f req/s (p99 %.2f ms, %.0f %% of plain)\n", td, tdp, 100*td/d, ts, tsp, 100*ts/s
}'
