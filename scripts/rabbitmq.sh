#!/usr/bin/env bash
# A private RabbitMQ broker in a directory of its own, on loopback, for tests,
# benchmarks and the demo. Several can run at once (one per directory).
#
#   scripts/rabbitmq.sh start  [DIR]   start (or restart) the broker in DIR; prints its AMQP URL
#   scripts/rabbitmq.sh stop   [DIR]   stop it (the queues in DIR survive a later start)
#   scripts/rabbitmq.sh status [DIR]   print the URL and exit 0 if it runs, else exit 1
#   scripts/rabbitmq.sh url    [DIR]   print the URL without checking
#
# The AMQP listener is on 127.0.0.1, or on $BIND_IP (the fault lab runs the
# broker on its own bridge inside a private network namespace; the guest
# user may then log in from that address).
#
# DIR comes from the argument, else $DIR, else a new temporary directory
# (start only; printed on stderr). The first start picks free loopback ports
# (or takes NODE_PORT / DIST_PORT from the environment) and writes them to
# DIR/env, so a restart in the same DIR keeps its URL, node name and data.
#
# Needs Debian's rabbitmq-server (bookworm: 3.10):
#   apt-get update && apt-get install -y rabbitmq-server amqp-tools
# It must run as root (the broker itself runs as the rabbitmq user, which
# gets DIR) or as the rabbitmq user. The package's own service, if it
# started, is neither used nor disturbed.
set -euo pipefail

usage() { echo "usage: $0 start|stop|status|url [DIR]" >&2; exit 2; }
[ $# -ge 1 ] || usage
cmd=$1
DIR=${2:-${DIR:-}}

RMQ_BIN=/usr/lib/rabbitmq/bin
if [ ! -x "$RMQ_BIN/rabbitmq-server" ]; then
  echo "rabbitmq-server is not installed: apt-get update && apt-get install -y rabbitmq-server amqp-tools" >&2
  exit 3
fi

if [ -z "$DIR" ]; then
  [ "$cmd" = start ] || { echo "$0 $cmd: give DIR (argument or \$DIR)" >&2; exit 2; }
  DIR=$(mktemp -d -t chiffon-rabbitmq.XXXXXX)
  echo "broker directory: $DIR" >&2
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

# free_port prints a TCP port nobody listens on now (best effort: the broker
# binds it a few seconds later).
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! ss -Hltn "sport = :$p" | grep -q .; then echo "$p"; return; fi
  done
  echo "no free port found" >&2; exit 1
}

# as_broker runs a RabbitMQ program as the broker's user with DIR as HOME,
# so that its Erlang cookie is the one in DIR.
as_broker() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u rabbitmq -- env HOME="$DIR" "$@"
  else
    env HOME="$DIR" "$@"
  fi
}

setup() {
  if [ ! -f "$DIR/env" ]; then
    local node_port=${NODE_PORT:-$(free_port)} dist_port=${DIST_PORT:-$(free_port)}
    local name
    name="chiffon-$(basename "$DIR" | tr -c 'A-Za-z0-9\n' '-')-$node_port"
    cat >"$DIR/env" <<EOF
NODE_PORT=$node_port
DIST_PORT=$dist_port
NODENAME=$name@localhost
EOF
  fi
  # shellcheck disable=SC1091
  . "$DIR/env"
  export RABBITMQ_NODENAME=$NODENAME
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$NODE_PORT
  export RABBITMQ_DIST_PORT=$DIST_PORT
  export RABBITMQ_MNESIA_BASE=$DIR/mnesia
  export RABBITMQ_LOG_BASE=$DIR/log
  export RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$DIR/rabbitmq.conf
  export RABBITMQ_PID_FILE=$DIR/rabbitmq.pid
  export RABBITMQ_ADVANCED_CONFIG_FILE=$DIR/advanced.config
  export ERL_EPMD_ADDRESS=127.0.0.1
  # Erlang distribution on loopback only, like epmd and the AMQP listener.
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  # No trailing "/": amqp-tools read "host:port/" as the empty vhost, not "/".
  BIND_IP=${BIND_IP:-127.0.0.1}
  URL="amqp://guest:guest@$BIND_IP:$NODE_PORT"
}

write_files() {
  mkdir -p "$DIR/mnesia" "$DIR/log"
  # No plugins at all: no management UI, no extra ports.
  [ -f "$DIR/enabled_plugins" ] || echo "[]." >"$DIR/enabled_plugins"
  [ -f "$DIR/advanced.config" ] || echo "[]." >"$DIR/advanced.config"
  cat >"$DIR/rabbitmq.conf" <<EOF
listeners.tcp.default = $BIND_IP:$NODE_PORT
$(if [ "${BIND_IP%%.*}" = 127 ]; then echo "loopback_users.guest = true"; else echo "loopback_users = none"; fi)
log.console = false
log.file.level = info
disk_free_limit.absolute = 10MB
EOF
  if [ ! -f "$DIR/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/.erlang.cookie"
  fi
  chmod 400 "$DIR/.erlang.cookie"
  if [ "$(id -u)" = 0 ]; then
    chown -R rabbitmq:rabbitmq "$DIR"
    if ! runuser -u rabbitmq -- test -w "$DIR"; then
      echo "the rabbitmq user cannot write $DIR (a parent directory is closed to it); choose another DIR" >&2
      exit 1
    fi
  fi
}

running() { as_broker "$RMQ_BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q status >/dev/null 2>&1; }

case $cmd in
  start)
    setup
    write_files
    if running; then echo "$URL"; exit 0; fi
    # -detached returns at once, even when start-up fails later: wait for it.
    as_broker "$RMQ_BIN/rabbitmq-server" -detached >"$DIR/log/detached.out" 2>&1
    # await_startup fails at once until the node has registered with epmd,
    # so retry it until a deadline.
    deadline=$(( $(date +%s) + ${START_TIMEOUT:-60} ))
    until as_broker "$RMQ_BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q -t 30 await_startup >"$DIR/log/await.out" 2>&1; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "rabbitmq in $DIR did not start within ${START_TIMEOUT:-60}s; last log lines:" >&2
        for f in "$DIR"/log/*; do echo "== $f" >&2; tail -n 20 "$f" >&2; done
        exit 1
      fi
      sleep 0.3
    done
    echo "$URL"
    ;;
  stop)
    [ -f "$DIR/env" ] || { echo "no broker in $DIR" >&2; exit 0; }
    setup
    # rabbitmqctl can time out on a loaded machine, so the pid file, not
    # its answer, says whether the broker is gone: ask it to shut down,
    # then wait for the process, then TERM and KILL it.
    pid=$(cat "$RABBITMQ_PID_FILE" 2>/dev/null || true)
    # Only this broker's process: a stale pid file's number may be reused.
    if [ -n "$pid" ] && ! grep -qzxF "RABBITMQ_MNESIA_BASE=$DIR/mnesia" "/proc/$pid/environ" 2>/dev/null; then
      pid=
    fi
    as_broker "$RMQ_BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q -t 30 shutdown >/dev/null 2>&1 || true
    if [ -n "$pid" ]; then
      for sig in 0 TERM KILL; do
        [ "$sig" = 0 ] || kill -s "$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
          kill -0 "$pid" 2>/dev/null || break 2
          sleep 0.2
        done
      done
      if kill -0 "$pid" 2>/dev/null; then
        echo "rabbitmq (pid $pid) in $DIR is still running" >&2
        exit 1
      fi
    fi
    ;;
  status)
    [ -f "$DIR/env" ] || { echo "no broker in $DIR" >&2; exit 1; }
    setup
    if running; then echo "$URL"; else echo "not running" >&2; exit 1; fi
    ;;
  url)
    [ -f "$DIR/env" ] || { echo "no broker in $DIR" >&2; exit 1; }
    setup
    echo "$URL"
    ;;
  *) usage ;;
esac
