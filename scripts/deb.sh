#!/usr/bin/env bash
# Builds the Debian package dist/chiffon_VERSION_ARCH.deb with Debian's own
# dpkg-deb (no debhelper, no Go packaging dependency): the binary, the
# systemd units, the example configs, the Grafana dashboard, the docs and
# the maintainer scripts in scripts/deb/ (the chiffon system user, the data
# dir, purge). `make deb` runs it after `make build`.
#
#   scripts/deb.sh [BINARY]      (default bin/chiffon)
#
# Environment: OUT (default dist), VERSION (default scripts/version.sh
# --deb), ARCH (default dpkg --print-architecture).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "deb.sh: $*" >&2; exit 1; }
BIN=${1:-bin/chiffon}
OUT=${OUT:-dist}
VERSION=${VERSION:-$(scripts/version.sh --deb)}
ARCH=${ARCH:-$(dpkg --print-architecture)}
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian's dpkg package)"
[ -x "$BIN" ] || die "no executable $BIN: run 'make build' first"
"$BIN" version >/dev/null || die "$BIN version failed: wrong architecture?"
[[ $VERSION =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "version '$VERSION' is not a Debian version"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
  "$root/usr/share/doc/chiffon/examples" "$root/usr/share/chiffon/grafana"

install -m 0755 "$BIN" "$root/usr/bin/chiffon"
# The units as scripts/install.sh installs them, with the packaged binary.
for unit in scripts/systemd/*.service; do
  sed 's|/usr/local/bin/chiffon|/usr/bin/chiffon|g' "$unit" >"$root/lib/systemd/system/$(basename "$unit")"
  chmod 0644 "$root/lib/systemd/system/$(basename "$unit")"
done
# The systemd-sleep hook (chiffon power suspend|resume before and after
# every sleep), as scripts/install.sh installs it, with the packaged binary.
install -d -m 0755 "$root/usr/lib/systemd/system-sleep"
sed 's|/usr/local/bin/chiffon|/usr/bin/chiffon|g' scripts/systemd/chiffon-sleep >"$root/usr/lib/systemd/system-sleep/chiffon"
chmod 0755 "$root/usr/lib/systemd/system-sleep/chiffon"
install -m 0644 scripts/systemd/*.example.json "$root/usr/share/doc/chiffon/examples/"
install -m 0644 scripts/grafana/chiffon.json "$root/usr/share/chiffon/grafana/chiffon.json"
install -m 0644 README.md CHANGELOG.md docs/OPERATIONS.md "$root/usr/share/doc/chiffon/"
cat >"$root/usr/share/doc/chiffon/copyright" <<'COPY'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: chiffon
Source: https://github.com/chiffon-dev/chiffon
COPY

for s in postinst prerm postrm; do
  install -m 0755 "scripts/deb/$s" "$root/DEBIAN/$s"
done
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: chiffon
Version: $VERSION
Architecture: $ARCH
Maintainer: Chiffon developers <chiffon@chiffon-dev.invalid>
Installed-Size: $size
Depends: libc6, passwd
Section: net
Priority: optional
Homepage: https://github.com/chiffon-dev/chiffon
Description: GPU desktop fleet capacity gossip and work dispatch
 Every desktop runs a chiffon agent that gossips its CPU, memory and GPU
 capacity (serf); orchestrators keep a raft registry, answer capacity
 queries over HTTP and dispatch work from RabbitMQ to desktops.
 .
 Installs the chiffon-desktop and chiffon-orchestrator systemd units
 (neither enabled: copy an example from /usr/share/doc/chiffon/examples to
 /etc/chiffon/chiffon.json first), the chiffon system user and
 /var/lib/chiffon.
CONTROL

mkdir -p "$OUT"
deb=$OUT/chiffon_${VERSION}_${ARCH}.deb
# --root-owner-group: every file root:root without fakeroot; the data dir
# and the user are made by postinst, not shipped.
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
