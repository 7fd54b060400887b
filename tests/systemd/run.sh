#!/usr/bin/env bash
# rrd under a real systemd (`make test-systemd`): contrib/systemd/rrd.service in a Debian 13
# root (systemd 257) booted with systemd-nspawn, rrd installed in it from a wheel of this
# checkout (in a venv that sees Debian's python3-systemd, so that rrd logs through it as a
# Debian user's rrd does), and the checks of tests/systemd/checks.py driven from here through
# nsenter.
#
# Needs root; installs debootstrap and systemd-container with apt-get when they are missing.
# The Debian root is cached in /var/tmp/rrd-systemd-root-<hash of its package list> (and the
# dependencies' wheels in /var/tmp/rrd-systemd-wheels-<hash>), but never trusted: a missing or
# broken cache is rebuilt. Each run boots a throwaway overlay of the cached root (or a copy
# where overlayfs does not work), removed at the end whatever happens.
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

SUITE=trixie
MIRROR=${RRD_SYSTEMD_MIRROR:-http://deb.debian.org/debian}
INCLUDE=systemd,systemd-sysv,dbus,python3,python3-venv,python3-systemd,util-linux,ca-certificates
KEY=$(printf '%s minbase %s' "$SUITE" "$INCLUDE" | sha256sum | cut -c1-12)
CACHE=/var/tmp/rrd-systemd-root-$KEY
CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_PAGER=)

PASSED=0
FAILED=0
DEPS_CACHED=0
WORK=""
ROOT=""
MERGED=""
NSPAWN=""
LEADER=""
CHILD=""

say() { printf 'test-systemd: %s\n' "$*"; }

# A step that failed before the checks could run: counted as a failed check, then stop.
setup_failed() {
    FAILED=$((FAILED + 1))
    printf 'FAIL setup: %s\n' "$*"
    exit 1
}

# A long step runs in the background and is waited for, so that a signal is acted on at once
# (bash runs a trap only once the foreground command is done) and the step can be stopped.
step() {
    "$@" &
    CHILD=$!
    wait "$CHILD"
    local code=$?
    CHILD=""
    return $code
}

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

# --- Tools -----------------------------------------------------------------------------------

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    step sh -c 'timeout 300 apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "$@"' sh "${missing[@]}" \
        >/tmp/rrd-systemd-apt.log 2>&1 ||
        setup_failed "apt-get install ${missing[*]} failed: $(tail -5 /tmp/rrd-systemd-apt.log)"
fi

# --- The Debian 13 root, cached ---------------------------------------------------------------

# Complete (debootstrap finished), every package installed, Python able to make a venv. -B:
# nothing is written into the cache, which runs may be using as an overlay's lower layer.
# shellcheck disable=SC2016 # ${Status} is dpkg-query's, not the shell's
root_ok() {
    [ -f "$1/.rrd-root-complete" ] && [ -x "$1/usr/lib/systemd/systemd" ] &&
        [ -x "$1/usr/bin/setpriv" ] && [ -x "$1/usr/bin/busctl" ] &&
        [ "$(chroot "$1" dpkg-query -W -f='${Status}\n' ${INCLUDE//,/ } 2>/dev/null |
            grep -c '^install ok installed$')" -eq "$(tr , '\n' <<<"$INCLUDE" | wc -l)" ] &&
        chroot "$1" /usr/bin/python3 -B -c 'import venv, ensurepip' >/dev/null 2>&1
}

exec 9>"$CACHE.lock"
flock -w 900 9 || setup_failed "another run holds $CACHE.lock"
if root_ok "$CACHE"; then
    say "Debian $SUITE root: cached in $CACHE"
else
    say "building the Debian $SUITE root in $CACHE (about a minute)"
    rm -rf --one-file-system "$CACHE" "$CACHE.new"
    t0=$(date +%s)
    step timeout 900 debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$CACHE.new" "$MIRROR" \
        >"$CACHE.log" 2>&1 || setup_failed "debootstrap failed (see $CACHE.log): $(tail -3 "$CACHE.log")"
    touch "$CACHE.new/.rrd-root-complete"
    mv "$CACHE.new" "$CACHE"
    root_ok "$CACHE" || setup_failed "the new root in $CACHE is unusable"
    say "built the root in $(($(date +%s) - t0))s"
fi
flock -u 9

WORK=$(mktemp -d /var/tmp/rrd-systemd-run.XXXXXX)
mkdir -p "$WORK/upper" "$WORK/overlay-work" "$WORK/root"
if mount -t overlay overlay \
    -o "lowerdir=$CACHE,upperdir=$WORK/upper,workdir=$WORK/overlay-work" "$WORK/root" 2>/dev/null; then
    MERGED=$WORK/root
    say "throwaway root: an overlay of the cache"
else
    cp -a --reflink=auto "$CACHE/." "$WORK/root/" || setup_failed "cannot copy $CACHE"
    say "throwaway root: a copy of the cache (no overlayfs here)"
fi
ROOT=$WORK/root

# --- rrd's wheel and its dependencies' ----------------------------------------------------------

PIP=("$REPO/.venv/bin/python" -m pip)
[ -x "$REPO/.venv/bin/python" ] || PIP=(python3 -m pip)
PYTHON=${PIP[0]}
ARCH=$(uname -m)
TARGET=$(chroot "$ROOT" /usr/bin/python3 -B -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# The checkout as it is (uncommitted changes too), without .venv, caches or build/.
mkdir -p "$WORK/src" "$WORK/wheels"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$REPO" ls-files -z -co --exclude-standard |
        (cd "$REPO" && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) |
        tar -xf - -C "$WORK/src"
else
    tar -C "$REPO" --exclude=.venv --exclude=.git --exclude=build --exclude='*.egg-info' \
        --exclude=__pycache__ -cf - . | tar -xf - -C "$WORK/src"
fi
step timeout 300 "${PIP[@]}" wheel --quiet --no-deps -w "$WORK/wheels" "$WORK/src" >"$WORK/pip.log" 2>&1 ||
    setup_failed "building rrd's wheel failed: $(tail -5 "$WORK/pip.log")"
WHEEL=$(ls "$WORK"/wheels/rrd-*.whl)

# The dependencies, as wheels for the root's Python: the host builds every one (sdists too),
# then fetches the target's build of those that are tied to one Python version.
DEPKEY=$( (cat "$REPO/pyproject.toml"; echo "$TARGET $ARCH") | sha256sum | cut -c1-12)
DEPS=/var/tmp/rrd-systemd-wheels-$DEPKEY
build_deps() {
    rm -rf "$DEPS" "$DEPS.new"
    mkdir -p "$DEPS.new/host"
    timeout 600 "${PIP[@]}" wheel --quiet -w "$DEPS.new/host" "$WHEEL" >"$WORK/pip.log" 2>&1 ||
        return 1
    : >"$DEPS.new/native.txt"
    for whl in "$DEPS.new"/host/*.whl; do
        IFS=- read -r -a part <<<"$(basename "$whl" .whl)"
        case "${part[0]}:${part[${#part[@]} - 2]}" in
            rrd:*) ;;
            *:none | *:abi3) cp "$whl" "$DEPS.new/" ;;
            *) echo "${part[0]}==${part[1]}" >>"$DEPS.new/native.txt" ;;
        esac
    done
    if [ -s "$DEPS.new/native.txt" ]; then
        timeout 600 "${PIP[@]}" download --quiet --no-deps --only-binary=:all: --dest "$DEPS.new" \
            --implementation cp --python-version "$TARGET" --abi "cp${TARGET/./}" \
            --platform "manylinux_2_28_$ARCH" --platform "manylinux_2_17_$ARCH" \
            --platform "manylinux2014_$ARCH" -r "$DEPS.new/native.txt" >>"$WORK/pip.log" 2>&1 ||
            return 1
    fi
    rm -rf "$DEPS.new/host"
    touch "$DEPS.new/.complete"
    mv "$DEPS.new" "$DEPS"
}
deps() {
    exec 9>"$DEPS.lock"
    flock -w 300 9 || setup_failed "another run holds $DEPS.lock"
    if [ "$1" = cached ] && [ -f "$DEPS/.complete" ]; then
        say "dependency wheels for Python $TARGET: cached in $DEPS"
        DEPS_CACHED=1
    else
        say "building dependency wheels for Python $TARGET in $DEPS"
        step build_deps ||
            setup_failed "wheels for rrd's dependencies: $(grep -v 'is ignored' "$WORK/pip.log" | tail -5)"
        DEPS_CACHED=0
    fi
    flock -u 9
    rm -rf "$ROOT/var/tmp/rrd-wheels"
    mkdir -p "$ROOT/var/tmp/rrd-wheels"
    cp "$WHEEL" "$DEPS"/*.whl "$ROOT/var/tmp/rrd-wheels/"
}
deps cached

# --- What the container gets: the shipped unit, a test drop-in, config and worker --------------

install -D -m 644 "$REPO/contrib/systemd/rrd.service" "$ROOT/etc/systemd/system/rrd.service"
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
install -d -m 755 "$ROOT/etc/rrd"
"$PYTHON" "$HERE/checks.py" --print-config >"$ROOT/etc/rrd/rr.yaml"
chmod 644 "$ROOT/etc/rrd/rr.yaml"
install -d "$ROOT/root/rrd-units" "$ROOT/root/rrd-units-252/rrd.service.d"
install -m 644 "$REPO/contrib/systemd/rrd.service" "$REPO/contrib/systemd/rrd@.service" \
    "$ROOT/root/rrd-units/"
install -m 644 "$REPO/contrib/systemd/rrd.service" "$ROOT/root/rrd-units-252/"
install -m 644 "$REPO/contrib/systemd/rrd.service.d/systemd-252.conf" \
    "$ROOT/root/rrd-units-252/rrd.service.d/"

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

install_rrd() {
    inside 180 sh -c 'rm -rf /opt/rrd && python3 -m venv --system-site-packages /opt/rrd &&
        /opt/rrd/bin/pip install --quiet --disable-pip-version-check --no-index \
            --find-links /var/tmp/rrd-wheels rrd &&
        ln -sf /opt/rrd/bin/rrd /usr/bin/rrd && rrd --version && systemctl daemon-reload' \
        >"$WORK/install.log" 2>&1
}
if ! step install_rrd; then
    [ "$DEPS_CACHED" = 1 ] ||
        setup_failed "installing rrd in the container: $(tail -5 "$WORK/install.log")"
    say "installing from the cached wheels failed: $(tail -1 "$WORK/install.log"); rebuilding them"
    deps rebuild
    step install_rrd || setup_failed "installing rrd in the container: $(tail -5 "$WORK/install.log")"
fi
say "installed $(head -1 "$WORK/install.log") in /opt/rrd, linked as /usr/bin/rrd"

# --- The checks ------------------------------------------------------------------------------------

step timeout 600 "$PYTHON" "$HERE/checks.py" --leader "$LEADER" --counts "$WORK/counts"
if [ -s "$WORK/counts" ]; then
    read -r passed failed <"$WORK/counts"
    PASSED=$((PASSED + passed))
    FAILED=$((FAILED + failed))
else
    FAILED=$((FAILED + 1))
    echo "FAIL checks: tests/systemd/checks.py did not finish (see above)"
fi
