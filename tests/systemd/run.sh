#!/usr/bin/env bash
# rrd under a real systemd (`make test-systemd`): the Debian package of this checkout (built by
# tools/make-deb.sh, as `make deb` does) installed with apt into a fresh Debian 13 root
# (systemd 257) booted with systemd-nspawn, apt resolving its python3-* dependencies from
# Debian; then the checks of tests/systemd/checks.py, driven from here through nsenter: the
# service as installed, a reload after editing /etc/rrd/rr.yaml, crashes, the watchdog, the
# journal, probes, upgrade, remove and purge, and the package's autopkgtest.
#
# Needs root; installs debootstrap and systemd-container with apt-get when they are missing.
# The Debian roots are cached in /var/tmp/rrd-{build,systemd}-root-<hash of their package list>
# (tools/debian-root.sh), but never trusted: a missing or broken cache is rebuilt. Each run
# boots a throwaway overlay of the cached root (or a copy where overlayfs does not work),
# removed at the end whatever happens. RRD_DEB=FILE tests that package instead of building one.
# Prints `N passed, N failed` last; exits non-zero if any check failed. On a failure it shows
# the end of the unit's journal; RRD_SYSTEMD_JOURNAL=FILE keeps the whole of it (every field of
# every entry: journalctl -o verbose).
set -uo pipefail
exec 3>&1 4>&2 # the traps write here: a signal may come while a step's output is redirected

BEGAN=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
    echo "test-systemd: skipped: needs root (systemd-nspawn)"
    exit 0
fi

CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_PAGER=)

PASSED=0
FAILED=0
WORK=""
ROOT=""
MERGED=""
NSPAWN=""
LEADER=""

say() { printf 'test-systemd: %s\n' "$*"; }

# A step that failed before the checks could run: counted as a failed check, then stop.
setup_failed() {
    FAILED=$((FAILED + 1))
    printf 'FAIL setup: %s\n' "$*"
    exit 1
}

fail() { setup_failed "$@"; }
# step, and the Debian roots; sets CHILD, which finish() stops.
# shellcheck source=tools/debian-root.sh
. "$REPO/tools/debian-root.sh"

# Run a command inside the container, with a clean environment and a timeout.
inside() {
    local limit=$1
    shift
    timeout "$limit" nsenter -t "$LEADER" -a "${CLEAN_ENV[@]}" "$@"
}

# The step running now and every process below it (timeout puts its command in a process
# group of its own, so a group kill would miss it): their pids, deepest first.
descendants() {
    local pid
    for pid in $(ps -o pid= --ppid "$1"); do
        descendants "$pid"
        echo "$pid"
    done
}

finish() {
    local code=$?
    trap - EXIT
    trap '' INT TERM # the cleanup below is bounded: let it finish
    exec >&3 2>&4
    if [ -n "$CHILD" ]; then
        # The step's processes, not the step itself: it ends when they do and reaps them.
        below=$(descendants "$CHILD")
        # shellcheck disable=SC2086 # one pid per word
        kill -TERM ${below:-$CHILD} 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$CHILD" 2>/dev/null || break
            sleep 0.1
        done
        # shellcheck disable=SC2046
        kill -KILL $(descendants "$CHILD") "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    if [ -n "$NSPAWN" ]; then
        if [ -n "$LEADER" ] && kill -0 "$NSPAWN" 2>/dev/null; then
            if [ "$FAILED" -gt 0 ]; then
                say "the unit's journal, last 40 lines:"
                inside 30 journalctl -u rrd.service -o short-precise -n 40 --no-pager | cut -c1-400
            fi
            if [ -n "${RRD_SYSTEMD_JOURNAL:-}" ]; then
                inside 30 journalctl -u rrd.service -o verbose --no-pager >"$RRD_SYSTEMD_JOURNAL"
                say "the unit's journal is in $RRD_SYSTEMD_JOURNAL"
            fi
            inside 20 systemctl poweroff >/dev/null 2>&1
        fi
        for _ in $(seq 300); do
            kill -0 "$NSPAWN" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$NSPAWN" 2>/dev/null; then
            say "the container did not power off in 30s: stopping systemd-nspawn $NSPAWN"
            kill -TERM "$NSPAWN" 2>/dev/null
            sleep 3
            kill -KILL "$NSPAWN" 2>/dev/null
        fi
        wait "$NSPAWN" 2>/dev/null
    fi
    if [ -n "$MERGED" ] && mountpoint -q "$MERGED"; then
        umount "$MERGED" 2>/dev/null || umount -l "$MERGED"
    fi
    if [ -n "$WORK" ]; then
        rm -rf --one-file-system "$WORK"
    fi
    echo "$PASSED passed, $FAILED failed"
    say "took $(($(date +%s) - BEGAN))s"
    if [ "$FAILED" -gt 0 ] || [ "$code" -ne 0 ]; then
        exit 1
    fi
    exit 0
}
trap finish EXIT
trap 'exec >&3 2>&4; say "interrupted"; exit 130' INT TERM

# --- The package, and the Debian 13 root it goes into -----------------------------------------

host_tools

DEB=${RRD_DEB:-}
if [ -z "$DEB" ]; then
    say "building the package (tools/make-deb.sh)"
    step bash "$REPO/tools/make-deb.sh" >/tmp/rrd-systemd-deb.log 2>&1 ||
        setup_failed "make deb failed: $(tail -5 /tmp/rrd-systemd-deb.log)"
    DEB=$REPO/dist/rrd_$(package_version "$REPO")_all.deb
    say "built $DEB ($(du -k "$DEB" | cut -f1) KiB); $(grep '^make deb: lintian:' /tmp/rrd-systemd-deb.log | cut -d' ' -f3-)"
fi
[ -f "$DEB" ] || setup_failed "no package at $DEB"

# The package's dependencies (python3 among them) are not in this root: apt must bring them.
cached_root systemd systemd,systemd-sysv,dbus,util-linux,ca-certificates
WORK=$(mktemp -d /var/tmp/rrd-systemd-run.XXXXXX)
throwaway_root "$WORK" "$ROOT_CACHE"
PYTHON=python3

# --- What the container gets: the package, a test drop-in, the test worker -------------------

install -D -m 644 "$DEB" "$ROOT/root/$(basename "$DEB")"
install -d "$ROOT/etc/systemd/system/rrd.service.d"
cat >"$ROOT/etc/systemd/system/rrd.service.d/test.conf" <<'EOF'
# The systemd stage's timings: a watchdog that trips in seconds, quick restarts.
[Service]
WatchdogSec=3s
TimeoutStopSec=20s
RestartSec=200ms
RestartMaxDelaySec=1s
EOF
install -D -m 644 "$HERE/ticker_worker.py" "$ROOT/usr/lib/rrd-test/ticker_worker.py"
install -D -m 644 "$REPO/contrib/systemd/rrd.service" "$ROOT/root/rrd-units-252/rrd.service"
install -D -m 644 "$REPO/contrib/systemd/rrd.service.d/systemd-252.conf" \
    "$ROOT/root/rrd-units-252/rrd.service.d/systemd-252.conf"
# debian/ for autopkgtest, which runs debian/tests against the installed package.
mkdir -p "$ROOT/root/rrd-src"
cp -r "$REPO/debian" "$ROOT/root/rrd-src/"

# --- Boot ------------------------------------------------------------------------------------------

t0=$(date +%s%N)
MACHINE=rrd-test-$$
systemd-nspawn -D "$ROOT" --register=no --keep-unit -b --console=passive --machine="$MACHINE" \
    </dev/null >"$WORK/nspawn.log" 2>&1 &
NSPAWN=$!
# The leader is the container's systemd once it runs in a pid namespace of its own.
OWN_PIDNS=$(readlink /proc/self/ns/pid)
for _ in $(seq 300); do
    candidate=$(ps -o pid= --ppid "$NSPAWN" | tr -d ' ' | head -1)
    if [ -n "$candidate" ] && [ "$(cat "/proc/$candidate/comm" 2>/dev/null)" = systemd ] &&
        [ "$(readlink "/proc/$candidate/ns/pid")" != "$OWN_PIDNS" ]; then
        LEADER=$candidate
        break
    fi
    kill -0 "$NSPAWN" 2>/dev/null || break
    sleep 0.1
done
[ -n "$LEADER" ] || setup_failed "systemd-nspawn did not start systemd: $(tail -5 "$WORK/nspawn.log")"
# `is-system-running --wait` fails at once while the container's bus is not up yet: retry.
deadline=$(($(date +%s) + 90))
state=""
while [ "$(date +%s)" -lt "$deadline" ] && kill -0 "$NSPAWN" 2>/dev/null; do
    step inside 60 systemctl is-system-running --wait >"$WORK/state" 2>/dev/null
    state=$(cat "$WORK/state")
    case "$state" in running | degraded | maintenance | stopping | offline) break ;; esac
    sleep 0.2
done
case "$state" in
    running) ;;
    degraded) say "the container is degraded: $(inside 10 systemctl --failed --plain --no-legend)" ;;
    *) setup_failed "the container did not boot: is-system-running says '$state'" ;;
esac
say "booted $(inside 10 systemctl --version | head -1) in $((($(date +%s%N) - t0) / 1000000))ms"

# --- The checks ------------------------------------------------------------------------------------

step timeout 900 "$PYTHON" "$HERE/checks.py" --leader "$LEADER" --counts "$WORK/counts" \
    --deb "/root/$(basename "$DEB")"
if [ -s "$WORK/counts" ]; then
    read -r passed failed <"$WORK/counts"
    PASSED=$((PASSED + passed))
    FAILED=$((FAILED + failed))
else
    FAILED=$((FAILED + 1))
    echo "FAIL checks: tests/systemd/checks.py did not finish (see above)"
fi
