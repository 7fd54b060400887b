#!/usr/bin/env bash
# `make deb`: dist/rrd_<version>_all.deb, built from the checkout as it is (uncommitted changes
# too) inside a Debian 13 root with dpkg-buildpackage, so that it is built against trixie's
# debhelper, dh-python and Python whatever the host runs; then lintian, which must find no error
# and no warning (overrides in debian/rrd.lintian-overrides, each with its reason).
#
# Needs root (debootstrap, systemd-nspawn). The build root is cached in
# /var/tmp/rrd-build-root-<hash> (tools/debian-root.sh); each build runs in a throwaway overlay.
# Prints dpkg -I of the package and lintian's output; exits non-zero when either step fails.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
DIST=${RRD_DIST:-$REPO/dist}
BUILD_INCLUDE=build-essential,debhelper,dh-python,pybuild-plugin-pyproject,python3-all,python3-hatchling,lintian

say() { printf 'make deb: %s\n' "$*"; }
fail() {
    printf 'make deb: FAILED: %s\n' "$*" >&2
    exit 1
}
if [ "$(id -u)" -ne 0 ]; then
    echo "make deb: needs root (it builds in a Debian 13 root made with debootstrap); try sudo" >&2
    exit 77
fi

# shellcheck source=tools/debian-root.sh
. "$HERE/debian-root.sh"

WORK=""
MERGED=""
cleanup() {
    local code=$?
    trap - EXIT INT TERM
    if [ -n "$CHILD" ]; then
        pkill -TERM -P "$CHILD" 2>/dev/null
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    if [ -n "$MERGED" ] && mountpoint -q "$MERGED"; then
        umount "$MERGED" 2>/dev/null || umount -l "$MERGED"
    fi
    [ -n "$WORK" ] && rm -rf --one-file-system "$WORK"
    exit "$code"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

BEGAN=$(date +%s)
VERSION=$(package_version "$REPO") || fail "cannot read the version in pyproject.toml"
DEB=rrd_${VERSION}_all.deb

host_tools
cached_root build "$BUILD_INCLUDE"
WORK=$(mktemp -d /var/tmp/rrd-deb-build.XXXXXX)
throwaway_root "$WORK" "$ROOT_CACHE"
copy_checkout "$REPO" "$ROOT/build/rrd"

say "dpkg-buildpackage (log: $DIST/build.log)"
mkdir -p "$DIST"
rm -f "$DIST/$DEB"
if ! step in_root "$ROOT" 900 sh -c 'cd /build/rrd && dpkg-buildpackage -us -uc' \
    >"$DIST/build.log" 2>&1; then
    tail -25 "$DIST/build.log" >&2
    fail "dpkg-buildpackage failed; the whole log is $DIST/build.log"
fi
[ -f "$ROOT/build/$DEB" ] || fail "dpkg-buildpackage made no $DEB: $(ls "$ROOT/build")"
cp "$ROOT/build/$DEB" "$DIST/$DEB"
# The .changes names the source package (.dsc, the native tarball) and the .deb: lintian reads
# debian/ as well as what the package installs.
CHANGES=$(cd "$ROOT/build" && ls rrd_"$VERSION"_*.changes) || fail "no .changes in $ROOT/build"

say "lintian (no error or warning may remain; info and pedantic tags are shown)"
# As an unprivileged user: lintian warns when run as root.
step in_root "$ROOT" 600 setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME=/tmp \
    lintian --fail-on error,warning --info --display-experimental --pedantic --show-overrides \
    "/build/$CHANGES" >"$DIST/lintian.txt" 2>&1
LINTIAN=$?
sed 's/^/  /' "$DIST/lintian.txt"
tags() { grep -c "^$1: " "$DIST/lintian.txt"; }
say "lintian: $(tags E) errors, $(tags W) warnings, $(tags I) info, $(tags P) pedantic," \
    "$(tags X) experimental, $(tags O) overridden"

echo
dpkg-deb --info "$DIST/$DEB" | sed 's/^/  /'
say "built $DIST/$DEB ($(du -k "$DIST/$DEB" | cut -f1) KiB) in $(($(date +%s) - BEGAN))s"
[ "$LINTIAN" -eq 0 ] || fail "lintian found errors or warnings (exit $LINTIAN): $DIST/lintian.txt"
