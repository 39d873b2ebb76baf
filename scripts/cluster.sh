#!/usr/bin/env bash
# A local Chiffon cluster as separate processes on 127.0.0.1: 3 orchestrators
# (raft, HTTP API) and 3 desktops (this machine, plus two synthetic GPU
# desktops from metrics files). Used by the README's HA walkthrough and by
# the failover and benchmark scripts.
#
#   scripts/cluster.sh up              start everything (idempotent per node)
#   scripts/cluster.sh status          leader, raft peers, members, registry
#   scripts/cluster.sh kill-leader     SIGKILL the raft leader, show the new one
#   scripts/cluster.sh start NAME      (re)start one node, e.g. after kill-leader
#   scripts/cluster.sh stop NAME       SIGTERM one node: it leaves gracefully (status left)
#   scripts/cluster.sh kill NAME       SIGKILL one node: suspect within seconds, offline
#                                      after the suspicion timeout (90 s)
#   scripts/cluster.sh down            SIGTERM everything (graceful leave), clean up
#   scripts/cluster.sh env             print the CHIFFON_* exports the CLI needs:
#                                      eval "$(scripts/cluster.sh env)"
#
# Nodes: orch-1 orch-2 orch-3 desk-host desk-gpu-1 desk-gpu-2.
# Secured (issue 11): the first start makes a gossip key, a cluster CA and
# certificates under CLUSTER_DIR/tls (an existing CA is kept), seeds each
# node's keyring with the key (so it is never on a command line), and gives
# orchestrators server certificates, desktops and the CLI ("cli") client
# ones. The HTTP API is then HTTPS with client certificates.
# Environment: BIN (default bin/chiffon), CLUSTER_DIR (default
# ${TMPDIR:-/tmp}/chiffon-cluster), BASE_PORT (default 19000), AMQP_URL
# (optional: turns on the RabbitMQ bridge), EXTRA_FLAGS (added to every agent),
# INSECURE=1 (no key, no TLS, -insecure: the plain-HTTP cluster of old).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/chiffon}
DIR=${CLUSTER_DIR:-${TMPDIR:-/tmp}/chiffon-cluster}
BASE=${BASE_PORT:-19000}
ORCHS=(orch-1 orch-2 orch-3)
DESKS=(desk-host desk-gpu-1 desk-gpu-2)

die() { echo "cluster.sh: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "no $BIN: run 'make build' first"

# index NAME → 0..5, used for ports.
index() {
  local i=0 n
  for n in "${ORCHS[@]}" "${DESKS[@]}"; do
    [ "$n" = "$1" ] && { echo $i; return; }
    i=$((i + 1))
  done
  die "unknown node $1 (nodes: ${ORCHS[*]} ${DESKS[*]})"
}
gossip_port() { echo $((BASE + $(index "$1"))); }
rpc_port() { echo $((BASE + 100 + $(index "$1"))); }
raft_port() { echo $((BASE + 200 + $(index "$1"))); }
http_port() { echo $((BASE + 300 + $(index "$1"))); }
http_addrs() { local n; for n in "${ORCHS[@]}"; do echo "127.0.0.1:$(http_port "$n")"; done; }

running() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

# TLS material, as `chiffon tls` names it under $TLS.
TLS=$DIR/tls
CA=$TLS/chiffon-agent-ca.pem
cert() { echo "$TLS/chiffon-$1-$2.pem"; }     # cert server|client NAME
certkey() { echo "$TLS/chiffon-$1-$2-key.pem"; }
if [ -n "${INSECURE:-}" ]; then
  SCHEME=http; CURL_TLS=(); CLI_TLS=()
else
  SCHEME=https
  CURL_TLS=(--cacert "$CA" --cert "$(cert client cli)" --key "$(certkey client cli)")
  CLI_TLS=(-tls-ca "$CA" -tls-cert "$(cert client cli)" -tls-key "$(certkey client cli)")
fi

# secure makes what is missing of the gossip key, the CA and the
# certificates; it never replaces a file (chiffon tls refuses to either).
secure() {
  [ -n "${INSECURE:-}" ] && return
  mkdir -p "$TLS" && chmod 700 "$DIR" "$TLS"
  [ -s "$DIR/gossip.key" ] || (umask 077 && "$BIN" keygen >"$DIR/gossip.key")
  [ -f "$CA" ] || "$BIN" tls ca create -out-dir "$TLS" >/dev/null
  local n
  for n in "${ORCHS[@]}"; do [ -f "$(cert server "$n")" ] || "$BIN" tls cert create -server -node "$n" -out-dir "$TLS" >/dev/null; done
  for n in "${DESKS[@]}" cli; do [ -f "$(cert client "$n")" ] || "$BIN" tls cert create -client -node "$n" -out-dir "$TLS" >/dev/null; done
}

# secure_args NAME: the node's TLS flags; its keyring (seeded with the
# gossip key on first start, as -encrypt would) in its data dir.
secure_args() {
  if [ -n "${INSECURE:-}" ]; then echo "-insecure"; return; fi
  local ring=$DIR/data/$1/serf/keyring role=client
  if [ ! -s "$ring" ]; then
    mkdir -p "$(dirname "$ring")" && chmod 700 "$DIR/data/$1" "$(dirname "$ring")"
    (umask 077 && printf '["%s"]\n' "$(cat "$DIR/gossip.key")" >"$ring")
  fi
  case $1 in orch-*) role=server ;; esac
  echo "-tls-ca $CA -tls-cert $(cert $role "$1") -tls-key $(certkey $role "$1")"
}

start() {
  local name=$1
  running "$name" && { echo "$name already running (pid $(cat "$DIR/$name.pid"))"; return; }
  mkdir -p "$DIR"
  secure
  local sec
  read -ra sec <<<"$(secure_args "$name")"
  local args=(agent -node "$name" -data-dir "$DIR/data/$name"
    -bind "127.0.0.1:$(gossip_port "$name")" -rpc-addr "127.0.0.1:$(rpc_port "$name")"
    -heartbeat-interval 5s -retry-join "127.0.0.1:$(gossip_port orch-1)" -retry-interval 1s "${sec[@]}"
    -owner-idle 0) # one machine for all: its owner's typing must not stop every desktop
  case $name in
    orch-*)
      args+=(-role orchestrator -bootstrap-expect 3 -raft-addr "127.0.0.1:$(raft_port "$name")"
        -http-addr "127.0.0.1:$(http_port "$name")")
      [ -n "${AMQP_URL:-}" ] && args+=(-amqp-url "$AMQP_URL")
      ;;
    desk-gpu-1) cp -n scripts/demo/gpu-desktop-1.json "$DIR/" 2>/dev/null || true
      args+=(-metrics-file "$DIR/gpu-desktop-1.json") ;;
    desk-gpu-2) cp -n scripts/demo/gpu-desktop-2.json "$DIR/" 2>/dev/null || true
      args+=(-metrics-file "$DIR/gpu-desktop-2.json") ;;
  esac
  # The agents take no CHIFFON_* from this shell: `cluster.sh env` exports
  # the CLI's client certificate and HTTP address, which are not theirs
  # (use EXTRA_FLAGS to add flags).
  local v clean=()
  for v in $(compgen -e); do [[ $v == CHIFFON_* ]] && clean+=(-u "$v"); done
  # shellcheck disable=SC2086
  env "${clean[@]}" "$BIN" "${args[@]}" ${EXTRA_FLAGS:-} >>"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
  echo "started $name (pid $!, log $DIR/$name.log)"
}

# leader_http: the HTTP address of the current raft leader, asked of any
# orchestrator that answers.
leader_http() {
  local a out
  for a in $(http_addrs); do
    out=$(curl -fsS --max-time 2 "${CURL_TLS[@]}" "$SCHEME://$a/v1/status/leader" 2>/dev/null) || continue
    out=$(sed -n 's/.*"http_addr" *: *"\([^"]*\)".*/\1/p' <<<"$out")
    [ -n "$out" ] && { echo "$out"; return 0; }
  done
  return 1
}

wait_leader() {
  local i
  for i in $(seq 100); do leader_http >/dev/null && return 0; sleep 0.1; done
  return 1
}

cmd=${1:-}
case $cmd in
  up)
    for n in "${ORCHS[@]}" "${DESKS[@]}"; do start "$n"; done
    wait_leader || die "no raft leader after 10 s; see $DIR/*.log"
    echo "leader: $(leader_http)"
    echo
    if [ -n "${INSECURE:-}" ]; then echo "Try (INSECURE: plain HTTP, gossip unencrypted):"
    else echo "Try (the HTTP API wants the CLI's client certificate; 'eval \"\$(scripts/cluster.sh env)\"' sets it for chiffon):"; fi
    echo "  curl -s ${CURL_TLS[*]} '$SCHEME://127.0.0.1:$(http_port orch-2)/agents/available-capacity?min_gpu_vram_gb=8'"
    echo "  $BIN capacity -http-addr 127.0.0.1:$(http_port orch-3) ${CLI_TLS[*]} -min-gpu-vram-gb 8"
    echo "  $BIN members -rpc-addr 127.0.0.1:$(rpc_port orch-1) -data-dir $DIR/data/orch-1"
    echo "  serf members -rpc-addr 127.0.0.1:$(rpc_port orch-1) -rpc-auth \"\$(cat $DIR/data/orch-1/serf/rpc-auth)\""
    echo "  scripts/cluster.sh kill-leader; scripts/cluster.sh status"
    ;;
  start) [ -n "${2:-}" ] || die "usage: cluster.sh start NAME"; start "$2" ;;
  stop | kill)
    [ -n "${2:-}" ] || die "usage: cluster.sh $cmd NAME"
    index "$2" >/dev/null
    running "$2" || die "$2 is not running"
    pid=$(cat "$DIR/$2.pid")
    if [ "$cmd" = stop ]; then
      kill -TERM "$pid"
      for _ in $(seq 100); do running "$2" || break; sleep 0.1; done
      running "$2" && die "$2 (pid $pid) still running 10 s after SIGTERM"
      echo "stopped $2 (SIGTERM: it left the cluster; status left); start it again with: scripts/cluster.sh start $2"
    else
      kill -KILL "$pid"
      for _ in $(seq 50); do running "$2" || break; sleep 0.1; done
      echo "killed $2 (SIGKILL: suspect within seconds, offline after the suspicion timeout, 90 s)"
      echo "watch: scripts/cluster.sh status, or $BIN agents -status suspect -http-addr $(http_addrs | sed -n 1p) ${CLI_TLS[*]}"
    fi
    ;;
  status)
    echo "leader: $(leader_http || echo none)"
    for n in "${ORCHS[@]}" "${DESKS[@]}"; do
      if running "$n"; then echo "  $n: running (pid $(cat "$DIR/$n.pid"))"; else echo "  $n: stopped"; fi
    done
    a=$(leader_http || http_addrs | sed -n 1p)
    "$BIN" operator raft list-peers -http-addr "$a" "${CLI_TLS[@]}" || true
    "$BIN" agents -http-addr "$a" -stale "${CLI_TLS[@]}" || true
    ;;
  kill-leader)
    l=$(leader_http) || die "no leader to kill"
    for n in "${ORCHS[@]}"; do
      if [ "127.0.0.1:$(http_port "$n")" = "$l" ]; then
        kill -9 "$(cat "$DIR/$n.pid")"
        t0=$(date +%s%N)
        echo "killed $n (leader, $l) with SIGKILL"
        for _ in $(seq 200); do
          nl=$(leader_http 2>/dev/null) && [ "$nl" != "$l" ] && break
          sleep 0.05
        done
        echo "new leader: ${nl:-none} after $((($(date +%s%N) - t0) / 1000000)) ms; restart the old one with: scripts/cluster.sh start $n"
        exit 0
      fi
    done
    die "leader $l is not one of this script's nodes"
    ;;
  down)
    for n in "${DESKS[@]}" "${ORCHS[@]}"; do
      running "$n" && kill -TERM "$(cat "$DIR/$n.pid")" && echo "stopping $n"
    done
    for n in "${DESKS[@]}" "${ORCHS[@]}"; do
      [ -f "$DIR/$n.pid" ] || continue
      for _ in $(seq 100); do running "$n" || break; sleep 0.1; done
      running "$n" && kill -9 "$(cat "$DIR/$n.pid")"
    done
    rm -rf "$DIR"
    ;;
  env)
    [ -n "${INSECURE:-}" ] && { echo "export CHIFFON_HTTP_ADDR=http://$(http_addrs | sed -n 1p)"; exit 0; }
    [ -f "$CA" ] || die "no cluster in $DIR: run 'scripts/cluster.sh up' first"
    echo "export CHIFFON_HTTP_ADDR=https://$(http_addrs | sed -n 1p) CHIFFON_TLS_CA=$CA CHIFFON_TLS_CERT=$(cert client cli) CHIFFON_TLS_KEY=$(certkey client cli)"
    ;;
  *) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
