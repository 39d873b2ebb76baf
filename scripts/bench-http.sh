#!/usr/bin/env bash
# bench-http.sh — HTTP API throughput against a bare net/http baseline.
#
# In one run on one machine, for each agent count in AGENTS: wrk against
# (1) a bare net/http handler that writes the same bytes as Chiffon's
# answer to the query (captured from Chiffon at start: same body, same
# Content-Type and Content-Length), (2) GET available-capacity on the
# LEADER of a 3-node raft cluster holding that many agents (10 % match),
# default mode, (3) on a FOLLOWER in the default mode (read index from the
# leader, answered by the follower once its replica caught up) and (4) on
# the follower with ?stale; then (5, 6) the bare handler and ?stale with
# Accept-Encoding: gzip (both send the same gzip bytes), and, with TLS=1,
# (7, 8) default and ?stale over HTTPS (tls-default, tls-stale: the
# follower asks the leader over mutual TLS). The server side is
# scripts/benchserver (one process: consensus over real TCP on loopback, a
# plain and a TLS api.Server per node, one registry). wrk presents no
# client certificate, so the TLS servers verify one only when given; with
# keep-alive the handshake is paid once per connection. It also prints the
# answer's bytes per agent, plain and gzip.
#
# Goals: at 10,000 agents, ?stale and leader default near the bare handler
# (>= 90 %), follower default >= 75 %; p99 < 10 ms at 32 connections.
# Results go to docs/PERFORMANCE.md by hand.
#
# The targets are measured in ROUNDS interleaved rounds and the median of
# each is reported, so that a burst of other work on a shared machine does
# not decide a ratio.
#
# Env: DURATION (10s), CONNS (32), THREADS (2), AGENTS ("1000 10000"),
#      ROUNDS (3), TLS (0; 1 adds the HTTPS targets).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
AGENTS=${AGENTS:-1000 10000}
TLS=${TLS:-0}
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
stop_server() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	pid=""
}
cleanup() {
	stop_server
	rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/benchserver" ./scripts/benchserver

# start_server N: a cluster holding N agents; sets the URLs.
start_server() {
	rm -f "$tmp/addrs"
	"$tmp/benchserver" -agents "$1" -query "$QUERY" >"$tmp/addrs" 2>"$tmp/server.log" &
	pid=$!
	# Wait (bounded) for the cluster to come up and print its addresses.
	for _ in $(seq 1 600); do
		grep -q '^READY$' "$tmp/addrs" && break
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "bench-http: benchserver died:" >&2
			cat "$tmp/server.log" >&2
			exit 1
		fi
		sleep 0.2
	done
	grep -q '^READY$' "$tmp/addrs" || { echo "bench-http: benchserver not ready after 120 s" >&2; exit 1; }
	addr() { sed -n "s/^$1=//p" "$tmp/addrs"; }
	BARE=$(addr BARE) LEADER=$(addr LEADER) FOLLOWER=$(addr FOLLOWER) TLS_FOLLOWER=$(addr TLS_FOLLOWER)
	BYTES=$(addr BARE_BYTES) GZBYTES=$(addr BARE_GZIP_BYTES) MATCHED=$(addr MATCHED)
}

# run NAME URL [wrk args]: runs wrk once, prints a summary line and
# appends "NAME RPS P99MS" to $tmp/results.
run() {
	local name=$1 url=$2 out="$tmp/$1.txt"
	shift 2
	wrk -t"$THREADS" -c"$CONNS" -d2s "$@" "$url" >/dev/null # warm-up: connections, pools, views
	wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "$url" >"$out"
	local rps p99 bad errs xfer
	rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
	p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' "$out")
	bad=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
	errs=$(awk '/Socket errors:/ {print}' "$out")
	xfer=$(awk '/^Transfer\/sec:/ {print $2}' "$out")
	printf '  %-11s %10s req/s  p99 %7.2f ms  %9s/s  non-2xx %s %s\n' "$name" "$rps" "$p99" "$xfer" "${bad:-0}" "$errs"
	echo "$name $rps $p99" >>"$tmp/results"
}

# median NAME COLUMN: the median of a column of one target's rounds.
median() {
	awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$tmp/results" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}

GZ=(-H 'Accept-Encoding: gzip')
SUMMARY=()
for n in $AGENTS; do
	start_server "$n"
	rm -f "$tmp/results"
	echo "bench-http: $n agents; wrk -t$THREADS -c$CONNS -d$DURATION --latency, $ROUNDS rounds; query $QUERY; $(nproc) CPUs"
	echo "answer: $MATCHED agents, $BYTES bytes plain ($((BYTES / MATCHED)) per agent), $GZBYTES gzip ($((GZBYTES / MATCHED)) per agent)"
	for round in $(seq 1 "$ROUNDS"); do
		echo "round $round (load average $(cut -d' ' -f1-3 /proc/loadavg))"
		run bare "$BARE$QUERY"
		run leader "$LEADER$QUERY"
		run default "$FOLLOWER$QUERY"
		run stale "$FOLLOWER$QUERY&stale"
		run bare-gzip "$BARE$QUERY" "${GZ[@]}"
		run stale-gzip "$FOLLOWER$QUERY&stale" "${GZ[@]}"
		if [ "$TLS" = 1 ]; then
			run tls-default "$TLS_FOLLOWER$QUERY"
			run tls-stale "$TLS_FOLLOWER$QUERY&stale"
		fi
	done
	line=$(awk -v n="$n" -v b="$(median bare 2)" -v l="$(median leader 2)" -v d="$(median default 2)" -v s="$(median stale 2)" \
		-v bg="$(median bare-gzip 2)" -v sg="$(median stale-gzip 2)" \
		-v bp="$(median bare 3)" -v lp="$(median leader 3)" -v dp="$(median default 3)" -v sp="$(median stale 3)" 'BEGIN {
		printf "%d agents: bare %.0f req/s (p99 %.2f ms); leader default %.0f (%.0f %%, p99 %.2f); follower default %.0f (%.0f %%, p99 %.2f); follower stale %.0f (%.0f %%, p99 %.2f); gzip: bare %.0f, stale %.0f (%.0f %%)",
			n, b, bp, l, 100*l/b, lp, d, 100*d/b, dp, s, 100*s/b, sp, bg, sg, 100*sg/bg
	}')
	line+=" | answer $MATCHED agents: $((BYTES / MATCHED)) bytes/agent plain, $((GZBYTES / MATCHED)) gzip"
	if [ "$TLS" = 1 ]; then
		line+=$(awk -v d="$(median default 2)" -v s="$(median stale 2)" -v td="$(median tls-default 2)" -v ts="$(median tls-stale 2)" 'BEGIN {
			printf " | TLS: default %.0f (%.0f %% of plain), stale %.0f (%.0f %% of plain)", td, 100*td/d, ts, 100*ts/s }')
	fi
	echo "$line"
	SUMMARY+=("$line")
	stop_server
done
echo "== summary (medians; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%s\n' "${SUMMARY[@]}"
