#!/usr/bin/env bash
# Prints this tree's version, SemVer (https://semver.org):
#   X.Y.Z                 on a release tag vX.Y.Z
#   X.Y.Z+N.gHASH         N commits after the tag vX.Y.Z
#   NEXT-dev+gHASH        no release tag in the history: NEXT is the "next"
#                         line of scripts/releases.txt
# with ".dirty" appended to the build metadata (or "+dirty") when the work
# tree has uncommitted changes, and NEXT-dev when git is not available (a
# source tarball). --deb prints the Debian version instead: the same with
# "-" turned into "~", so that 0.2.0~dev sorts before 0.2.0 (dpkg).
# The Makefile passes it to -ldflags "-X main.version=...".
set -euo pipefail
cd "$(dirname "$0")/.."
next=$(awk '$1 == "next" { print $2 }' scripts/releases.txt)
v=
if d=$(git describe --tags --match 'v[0-9]*.[0-9]*.[0-9]*' --long --dirty 2>/dev/null); then
  # vX.Y.Z-N-gHASH[-dirty]
  dirty=
  [[ $d == *-dirty ]] && dirty=dirty && d=${d%-dirty}
  hash=${d##*-}; d=${d%-*}
  n=${d##*-}; tag=${d%-*}
  v=${tag#v}
  meta=
  [ "$n" != 0 ] && meta=$n.$hash
  [ -n "$dirty" ] && meta=${meta:+$meta.}$dirty
  [ -n "$meta" ] && v=$v+$meta
elif hash=$(git rev-parse --short=7 HEAD 2>/dev/null); then
  v=$next-dev+g$hash
  git diff --quiet HEAD -- 2>/dev/null || v=$v.dirty
else
  v=$next-dev
fi
if [ "${1:-}" = --deb ]; then
  v=${v/-/\~}
fi
echo "$v"
