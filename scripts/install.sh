#!/usr/bin/env bash
# Installs Chiffon as a systemd service on this machine (Debian/Ubuntu or
# any systemd distribution): the binary, a `chiffon` system user, the data
# dir, a config file and the unit. Safe to run again: an upgrade replaces the
# binary and the unit and keeps the user, the data and the config file.
#
#   sudo scripts/install.sh --role desktop|orchestrator [options]
#
# Options:
#   --role R        desktop or orchestrator (required). For a node that is
#                   both, install orchestrator and set "role" in the config.
#   --bin PATH      the chiffon binary to install (default: bin/chiffon, from
#                   'make build')
#   --encrypt KEY   the cluster's gossip key ('chiffon keygen', the same on
#                   every node), written into a new config file
#   --token TOKEN   the cluster's HTTP API token, written into a new config
#   --join ADDRS    comma-separated gossip addresses of orchestrators
#                   (IP:7946), written into a new config file as retry_join
#   --start         enable and start the service now (default: enable only,
#                   so you can edit the config first)
#   -h, --help      this text
#
# Environment:
#   DESTDIR   stage everything under this directory instead of / (packaging,
#             or a dry run): no root needed, no user is created, nothing is
#             chowned and systemctl is not called.
#   PREFIX    where the binary goes (default /usr/local: /usr/local/bin/chiffon)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

ROLE= BIN=bin/chiffon ENCRYPT= TOKEN= JOIN= START=
while [ $# -gt 0 ]; do
  case $1 in
    --role) ROLE=${2:-}; shift 2 ;;
    --role=*) ROLE=${1#*=}; shift ;;
    --bin) BIN=${2:-}; shift 2 ;;
    --bin=*) BIN=${1#*=}; shift ;;
    --encrypt) ENCRYPT=${2:-}; shift 2 ;;
    --encrypt=*) ENCRYPT=${1#*=}; shift ;;
    --token) TOKEN=${2:-}; shift 2 ;;
    --token=*) TOKEN=${1#*=}; shift ;;
    --join) JOIN=${2:-}; shift 2 ;;
    --join=*) JOIN=${1#*=}; shift ;;
    --start) START=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

case $ROLE in
  desktop|orchestrator) ;;
  "") usage >&2; die "--role is required: desktop or orchestrator" ;;
  *) die "--role '$ROLE': want desktop or orchestrator" ;;
esac

DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PREFIX=${PREFIX:-/usr/local}
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
  die "must run as root to create the chiffon user and install the service: sudo $0 --role $ROLE ...
  (for a dry run without root, stage into a directory: DESTDIR=/tmp/chiffon-stage $0 --role $ROLE)"
fi

# Values that go into the JSON config: checked, so they cannot break it.
[ -z "$ENCRYPT" ] || [[ $ENCRYPT =~ ^[A-Za-z0-9+/]+=*$ ]] || die "--encrypt: not base64 (use the output of 'chiffon keygen')"
[ -z "$TOKEN" ] || [[ $TOKEN =~ ^[A-Za-z0-9._~+/=-]+$ ]] || die "--token: use letters, digits and ._~+/=- only"
join_re='^[][A-Za-z0-9.:_,-]+$'
[ -z "$JOIN" ] || [[ $JOIN =~ $join_re ]] || die "--join: want comma-separated HOST:PORT addresses"

[ -x "$BIN" ] || die "no executable $BIN: run 'make build' first, or give --bin PATH"
"$BIN" version >/dev/null 2>&1 || die "$BIN does not run ('$BIN version' failed): wrong architecture?"

UNIT=chiffon-$ROLE.service
OTHER=chiffon-$([ "$ROLE" = desktop ] && echo orchestrator || echo desktop).service
SYSTEMD_DIR=$DESTDIR/etc/systemd/system
[ -e "$SYSTEMD_DIR/$OTHER" ] && die "$OTHER is installed already; one machine runs one chiffon agent (for both roles, install orchestrator and set \"role\": [\"desktop\", \"orchestrator\"] in /etc/chiffon/chiffon.json)"

# 1. The binary. install(1) writes a new file, so a running agent keeps its
#    old one until it is restarted.
install -d -m 0755 "$DESTDIR$PREFIX/bin"
install -m 0755 "$BIN" "$DESTDIR$PREFIX/bin/chiffon"
echo "installed $DESTDIR$PREFIX/bin/chiffon ($("$BIN" version 2>/dev/null | head -1))"

# 2. The user, a system account without a login shell or home of its own.
if [ -z "$DESTDIR" ]; then
  if ! getent passwd chiffon >/dev/null; then
    nologin=$(command -v nologin || echo /usr/sbin/nologin)
    useradd --system --user-group --home-dir /var/lib/chiffon --no-create-home --shell "$nologin" \
      --comment "Chiffon agent" chiffon
    echo "created system user chiffon"
  fi
  if [ "$ROLE" = desktop ]; then
    # GPU device nodes: NVIDIA's are usually world-readable; AMD's and
    # Intel's (/dev/dri, /dev/kfd) belong to these groups.
    for g in video render; do
      if getent group "$g" >/dev/null && ! id -nG chiffon | tr ' ' '\n' | grep -qx "$g"; then
        usermod -a -G "$g" chiffon && echo "added chiffon to group $g"
      fi
    done
  fi
fi

# 3. Directories: the data dir is the agent's alone; the config dir is
#    readable by the agent and writable by root only.
owner=() cfgowner=()
[ -z "$DESTDIR" ] && owner=(-o chiffon -g chiffon) && cfgowner=(-o root -g chiffon)
install -d -m 0750 "${owner[@]}" "$DESTDIR/var/lib/chiffon"
install -d -m 0750 "${cfgowner[@]}" "$DESTDIR/etc/chiffon"

# 4. The config file: created once from the example, never overwritten.
CONF=$DESTDIR/etc/chiffon/chiffon.json
if [ -e "$CONF" ]; then
  echo "kept $CONF (delete it to start again from scripts/systemd/$ROLE.example.json)"
else
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  cp "scripts/systemd/$ROLE.example.json" "$tmp"
  [ -n "$ENCRYPT" ] && sed -i "s|\"REPLACE-WITH-THE-CLUSTER-KEY-FROM-chiffon-keygen\"|\"$ENCRYPT\"|" "$tmp"
  [ -n "$TOKEN" ] && sed -i "s|\"REPLACE-WITH-THE-CLUSTER-API-TOKEN\"|\"$TOKEN\"|" "$tmp"
  if [ -n "$JOIN" ]; then
    list=$(sed 's/,/", "/g' <<<"$JOIN")
    sed -i "s|\"retry_join\": \[.*\]|\"retry_join\": [\"$list\"]|" "$tmp"
  fi
  install -m 0640 "${cfgowner[@]}" "$tmp" "$CONF"
  echo "created $CONF from scripts/systemd/$ROLE.example.json"
fi

# 5. The unit, pointing at the binary just installed.
install -d -m 0755 "$SYSTEMD_DIR"
sed "s|/usr/local/bin/chiffon|$PREFIX/bin/chiffon|" "scripts/systemd/$UNIT" >"$SYSTEMD_DIR/$UNIT.tmp"
chmod 0644 "$SYSTEMD_DIR/$UNIT.tmp"
mv "$SYSTEMD_DIR/$UNIT.tmp" "$SYSTEMD_DIR/$UNIT"
echo "installed $SYSTEMD_DIR/$UNIT"

# 6. Desktops: the sleep hook, so that a suspend is "asleep", not a
#    failure (systemd-sleep runs it before and after every sleep).
if [ "$ROLE" = desktop ]; then
  SLEEP_DIR=$DESTDIR/usr/lib/systemd/system-sleep
  install -d -m 0755 "$SLEEP_DIR"
  sed "s|/usr/local/bin/chiffon|$PREFIX/bin/chiffon|" scripts/systemd/chiffon-sleep >"$SLEEP_DIR/chiffon.tmp"
  chmod 0755 "$SLEEP_DIR/chiffon.tmp"
  mv "$SLEEP_DIR/chiffon.tmp" "$SLEEP_DIR/chiffon"
  echo "installed $SLEEP_DIR/chiffon (sleep hook: chiffon power suspend|resume)"
fi

if [ -n "$DESTDIR" ]; then
  echo "staged under $DESTDIR (no user created, systemctl not called)"
  exit 0
fi

systemctl daemon-reload
if [ -n "$START" ]; then
  systemctl enable --now "$UNIT"
  echo "started $UNIT"
else
  systemctl enable "$UNIT" >/dev/null 2>&1
  echo "enabled $UNIT (not started)"
fi
todo=$(grep -o 'REPLACE-WITH-[A-Za-z-]*' "$CONF" | sort -u || true)
[ -z "$todo" ] || echo "
Before starting, edit $CONF and replace:
$(sed 's/^/  /' <<<"$todo")
(the same gossip key and token on every node; docs/OPERATIONS.md explains every key)."
cat <<MSG

Next:
  sudoedit $CONF
  sudo systemctl restart $UNIT
  journalctl -u $UNIT -f
  sudo $PREFIX/bin/chiffon members -data-dir /var/lib/chiffon   # serf RPC on 127.0.0.1:7373; its token is in /var/lib/chiffon/serf/rpc-auth
MSG
