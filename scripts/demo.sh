#!/usr/bin/env bash
# A local Chiffon cluster you can look at (make demo): 3 orchestrators and 3
# desktops as separate processes on 127.0.0.1 (scripts/cluster.sh) — this
# machine's real resources plus two synthetic GPU desktops declared by
# metrics files. Ctrl-C leaves the cluster gracefully and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
export BIN=${BIN:-bin/chiffon}
export CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d -t chiffon-demo.XXXXXX)}
export BASE_PORT=${BASE_PORT:-19000}
SERF=$(command -v serf || echo "$(go env GOPATH)/bin/serf")
SLEEPER=
stop() {
  trap - EXIT INT TERM
  [ -n "$SLEEPER" ] && kill "$SLEEPER" 2>/dev/null
  echo; echo "stopping (graceful leave)..."; scripts/cluster.sh down
}
trap stop EXIT
# exit runs the EXIT trap once: stop, then leave with 0 (a plain Ctrl-C or
# SIGTERM is the way to end the demo).
trap 'exit 0' INT TERM

scripts/cluster.sh up >/dev/null
H1=127.0.0.1:$((BASE_PORT + 300)); H2=127.0.0.1:$((BASE_PORT + 301)); R1=127.0.0.1:$((BASE_PORT + 100))
# The cluster is secured (cluster.sh): HTTPS with the CLI's client
# certificate, which `cluster.sh env` exports for chiffon as CHIFFON_TLS_*.
ENV=$(scripts/cluster.sh env)
eval "$ENV"
SCHEME=${CHIFFON_HTTP_ADDR%%://*}
CURL=(curl -s)
[ -n "${CHIFFON_TLS_CA:-}" ] && CURL+=(--cacert "$CHIFFON_TLS_CA" --cert "$CHIFFON_TLS_CERT" --key "$CHIFFON_TLS_KEY")
for _ in $(seq 100); do
  n=$("${CURL[@]}" -f "$SCHEME://$H1/agents?stale&status=online" 2>/dev/null | grep -o '"agent_id"' | wc -l) || true
  [ "${n:-0}" -ge 6 ] && break
  sleep 0.2
done
"$BIN" agents -http-addr "$H1"
echo
"$BIN" operator raft list-peers -http-addr "$H1"
cat <<MSG

Chiffon demo cluster is up (data and logs in $CLUSTER_DIR), secured: gossip
encrypted, HTTPS with client certificates (CA and certificates in $CLUSTER_DIR/tls).
Try, in another terminal, after setting the CLI's certificate:
  $ENV
  ${CURL[*]} '$SCHEME://$H2/agents/available-capacity?min_gpu_vram_gb=8'
  $BIN capacity -http-addr $H2 -min-gpu-vram-gb 8
  $BIN members -rpc-addr $R1 -data-dir $CLUSTER_DIR/data/orch-1
  $SERF members -rpc-addr=$R1 -rpc-auth="\$(cat $CLUSTER_DIR/data/orch-1/serf/rpc-auth)" -tag gpu_type=nvidia -detailed
  sed -i 's/"vram_free_gb": 21.5/"vram_free_gb": 3/' $CLUSTER_DIR/gpu-desktop-1.json   # seen within a heartbeat (5 s)
  CLUSTER_DIR=$CLUSTER_DIR BASE_PORT=$BASE_PORT scripts/cluster.sh kill-leader     # HA failover
  CLUSTER_DIR=$CLUSTER_DIR BASE_PORT=$BASE_PORT scripts/cluster.sh status
Watch a desktop go away (dashboard: $SCHEME://$H1/ui/ with the client certificate in the browser, or: watch -n1 $BIN agents -http-addr $H1):
  CLUSTER_DIR=$CLUSTER_DIR BASE_PORT=$BASE_PORT scripts/cluster.sh kill desk-gpu-2    # SIGKILL: suspect in seconds, offline after 90 s
  CLUSTER_DIR=$CLUSTER_DIR BASE_PORT=$BASE_PORT scripts/cluster.sh stop desk-gpu-1    # SIGTERM: leaves, left at once
  CLUSTER_DIR=$CLUSTER_DIR BASE_PORT=$BASE_PORT scripts/cluster.sh start desk-gpu-2   # back online
Press Ctrl-C to stop.
MSG
# Sleep in the background and wait for it: bash runs a trap only between
# commands, so a foreground sleep would hold off SIGTERM for up to an hour.
while :; do
  sleep 3600 &
  SLEEPER=$!
  wait "$SLEEPER" || true
done
