#!/usr/bin/env bash
# A process-mode fleet simulation with UDP packet loss: `chiffon sim
# -orchestrators process` runs on loopback sockets, where its own -loss
# cannot reach, so this runs the whole sim (desktops and orchestrator
# processes) in a network namespace of its own whose loopback drops LOSS
# per mille of the UDP packets sent (nftables' `numgen random`; gossip's
# pings, acks and broadcasts; TCP — raft, the HTTP API, pushes,
# memberlist's push-pull and its TCP fallback ping — is not touched).
# Prints the sim's report and then the packets the namespace sent and
# dropped. Needs root (ip netns, nft); touches no other namespace.
#
#   scripts/sim-loss.sh -desktops 500 -duration 2m -time-scale 0.5 -kill 2 -report r.json
#   LOSS=20 scripts/sim-loss.sh ...      2 % (the default), LOSS=0 counts only
#
# Environment: LOSS (per mille, default 20), BIN (default: the repository's
# bin/chiffon).
# Every argument goes to `chiffon sim -orchestrators process`.
set -euo pipefail
# No cd: a relative -report or -data-dir is the caller's.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/bin/chiffon}
LOSS=${LOSS:-20}
[ -x "$BIN" ] || { echo "sim-loss.sh: no $BIN: run 'make build' first" >&2; exit 1; }
case "$LOSS" in '' | *[!0-9]*) echo "sim-loss.sh: LOSS=$LOSS: want per mille, 0 to 999" >&2; exit 2 ;; esac
[ "$LOSS" -lt 1000 ] || { echo "sim-loss.sh: LOSS=$LOSS: want per mille, 0 to 999" >&2; exit 2; }
command -v nft >/dev/null || { echo "sim-loss.sh: needs nft (apt-get install nftables)" >&2; exit 1; }
NS=chiffon-loss-$$
ip netns add "$NS"
cleanup() {
  # Anything the sim left in the namespace (an interrupted run) goes with it.
  local p
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" nft -f - <<EOF
table inet chiffon_loss {
  chain out {
    type filter hook output priority 0; policy accept;
    meta l4proto udp counter name udp_sent
    meta l4proto udp numgen random mod 1000 < $LOSS counter name udp_dropped drop
  }
  counter udp_sent {}
  counter udp_dropped {}
}
EOF
rc=0
ip netns exec "$NS" "$BIN" sim -orchestrators process -udp-loss-outside "$(awk -v l="$LOSS" 'BEGIN { print l / 1000 }')" "$@" || rc=$?
counter() { ip netns exec "$NS" nft list counter inet chiffon_loss "$1" | awk '/packets/ {print $2}'; }
sent=$(counter udp_sent)
dropped=$(counter udp_dropped)
awk -v s="$sent" -v d="$dropped" -v l="$LOSS" 'BEGIN {
  printf "udp loss: %d of %d packets dropped (%.2f %%; asked %.1f %%)\n", d, s, (s ? 100 * d / s : 0), l / 10 }'
exit $rc
