#!/usr/bin/env bash
# Installs, removes and purges a chiffon .deb on this machine and checks
# each step, as an operator would: the files in place, the chiffon system
# user, the data dir's owner and mode, `chiffon version`, an agent that runs
# as that user and writes its data dir, `dpkg -r` keeping the data and
# `dpkg --purge` deleting it. Needs root; CI (.ci/run) runs it after
# `make deb`. It refuses to run where chiffon is installed or
# /var/lib/chiffon or /etc/chiffon exist, so it never touches a real
# installation.
#
#   sudo scripts/deb-test.sh dist/chiffon_VERSION_ARCH.deb
set -euo pipefail

DEB=${1:?usage: $0 dist/chiffon_VERSION_ARCH.deb}
fail() { echo "deb-test: FAIL: $*" >&2; exit 1; }
ok() { echo "deb-test: ok: $*"; }
[ "$(id -u)" = 0 ] || fail "run as root (dpkg -i)"
[ -f "$DEB" ] || fail "no $DEB (make deb)"
if dpkg-query -W -f='${Status}' chiffon 2>/dev/null | grep -q installed; then
  fail "chiffon is installed on this machine: the test would remove it"
fi
for d in /var/lib/chiffon /etc/chiffon; do
  [ ! -e "$d" ] || fail "$d exists: the test's purge would delete it"
done

agent_pid=
cleanup() {
  [ -z "$agent_pid" ] || kill "$agent_pid" 2>/dev/null || true
  # Leave the machine as it was, whatever failed.
  dpkg --purge chiffon >/dev/null 2>&1 || true
}
trap cleanup EXIT

want_version=$(dpkg-deb -f "$DEB" Version)
dpkg -i "$DEB"
ok "dpkg -i $DEB"

# Files in place.
for f in /usr/bin/chiffon /lib/systemd/system/chiffon-desktop.service /lib/systemd/system/chiffon-orchestrator.service \
  /usr/share/doc/chiffon/examples/desktop.example.json /usr/share/doc/chiffon/examples/orchestrator.example.json \
  /usr/share/chiffon/grafana/chiffon.json /usr/share/doc/chiffon/CHANGELOG.md; do
  [ -f "$f" ] || fail "$f missing"
done
[ -x /usr/bin/chiffon ] || fail "/usr/bin/chiffon not executable"
[ -x /usr/lib/systemd/system-sleep/chiffon ] || fail "the sleep hook /usr/lib/systemd/system-sleep/chiffon is missing"
grep -q '/usr/bin/chiffon' /usr/lib/systemd/system-sleep/chiffon || fail "the sleep hook does not run /usr/bin/chiffon"
grep -q '^ExecStart=/usr/bin/chiffon agent ' /lib/systemd/system/chiffon-desktop.service ||
  fail "the desktop unit does not start /usr/bin/chiffon"
ok "files in place"

# The version the package says is the one the binary says (~ is SemVer's -).
out=$(/usr/bin/chiffon version) || fail "chiffon version failed"
case $out in
  "Chiffon ${want_version/\~/-} ("*) ok "chiffon version: $out" ;;
  *) fail "chiffon version says '$out'; the package is $want_version" ;;
esac

# The user and the directories.
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd chiffon) || fail "no user chiffon"
[ "$uid" -lt 1000 ] || fail "chiffon has uid $uid: not a system user"
[ "$home" = /var/lib/chiffon ] || fail "chiffon's home is $home"
case $shell in */nologin | */false) ;; *) fail "chiffon's shell is $shell" ;; esac
[ "$(stat -c '%a %U %G' /var/lib/chiffon)" = "750 chiffon chiffon" ] ||
  fail "/var/lib/chiffon is $(stat -c '%a %U %G' /var/lib/chiffon); want 750 chiffon chiffon"
[ "$(stat -c '%a %U %G' /etc/chiffon)" = "750 root chiffon" ] ||
  fail "/etc/chiffon is $(stat -c '%a %U %G' /etc/chiffon); want 750 root chiffon"
ok "user chiffon (uid $uid), /var/lib/chiffon 750 chiffon:chiffon, /etc/chiffon 750 root:chiffon"

# An agent runs as the user and writes its data dir (node id, serf
# keyring dir), on loopback and ports the kernel picks.
# setpriv execs the agent as the user, so SIGTERM reaches the agent itself.
setpriv --reuid chiffon --regid chiffon --init-groups /usr/bin/chiffon agent -node deb-test -data-dir /var/lib/chiffon \
  -bind 127.0.0.1:0 -rpc-addr 127.0.0.1:0 >/tmp/chiffon-deb-test.log 2>&1 &
agent_pid=$!
for _ in $(seq 200); do
  [ -s /var/lib/chiffon/node-id ] && break
  kill -0 "$agent_pid" 2>/dev/null || { cat /tmp/chiffon-deb-test.log >&2; fail "the agent exited"; }
  sleep 0.1
done
[ -s /var/lib/chiffon/node-id ] || { cat /tmp/chiffon-deb-test.log >&2; fail "no node-id after 20 s"; }
kill -TERM "$agent_pid"
wait "$agent_pid" || { cat /tmp/chiffon-deb-test.log >&2; fail "the agent did not exit 0 on SIGTERM"; }
agent_pid=
[ "$(stat -c %U /var/lib/chiffon/node-id)" = chiffon ] || fail "node-id not owned by chiffon"
node_id=$(cat /var/lib/chiffon/node-id)
rm -f /tmp/chiffon-deb-test.log
ok "an agent ran as chiffon and wrote /var/lib/chiffon/node-id"

# Remove: the program goes, the data and the config dir stay.
dpkg -r chiffon
[ ! -e /usr/bin/chiffon ] || fail "/usr/bin/chiffon still there after dpkg -r"
[ ! -e /lib/systemd/system/chiffon-desktop.service ] || fail "the unit is still there after dpkg -r"
[ "$(cat /var/lib/chiffon/node-id 2>/dev/null)" = "$node_id" ] || fail "dpkg -r lost /var/lib/chiffon/node-id"
[ -d /etc/chiffon ] || fail "dpkg -r removed /etc/chiffon"
ok "dpkg -r removed the program and kept /var/lib/chiffon and /etc/chiffon"

# Reinstall on the kept data: the agent's identity survives.
dpkg -i "$DEB" >/dev/null
[ "$(cat /var/lib/chiffon/node-id)" = "$node_id" ] || fail "reinstalling changed the node id"
[ "$(stat -c '%a %U' /var/lib/chiffon)" = "750 chiffon" ] || fail "reinstall changed /var/lib/chiffon's mode"
ok "reinstalled over the kept data"

# Purge: the data and the config go too.
dpkg --purge chiffon
[ ! -e /var/lib/chiffon ] || fail "/var/lib/chiffon still there after dpkg --purge"
[ ! -e /etc/chiffon ] || fail "/etc/chiffon still there after dpkg --purge"
[ ! -e /usr/bin/chiffon ] || fail "/usr/bin/chiffon still there after dpkg --purge"
if dpkg-query -W -f='${Status}' chiffon 2>/dev/null | grep -q 'installed\|config-files'; then
  fail "dpkg still knows chiffon after --purge"
fi
ok "dpkg --purge removed /var/lib/chiffon and /etc/chiffon"
echo "deb-test: PASS"
