# shellcheck shell=bash
# Debian 13 roots for `make deb` (tools/make-deb.sh) and `make test-systemd`
# (tests/systemd/run.sh), sourced by both: one way to build, cache, check and throw away a root.
#
# A root is made by debootstrap (minbase), then apt-get installs a list of packages in it (apt,
# unlike debootstrap, resolves virtual packages such as perl-openssl-abi-3); it is cached in
# /var/tmp/rrd-<purpose>-root-<hash of suite and list>, and never trusted: a missing or broken
# cache is rebuilt. A run works in a throwaway overlay of it (or a copy where overlayfs does not
# work), so that the cache is only ever written while it is built, under its lock.
#
# The caller defines say MESSAGE and fail MESSAGE (does not return), stops $CHILD (the step
# running) on a signal, and unmounts $MERGED when it is done.
# Needs root; installs debootstrap and systemd-container with apt-get when they are missing.

SUITE=trixie
MIRROR=${RRD_DEBIAN_MIRROR:-${RRD_SYSTEMD_MIRROR:-http://deb.debian.org/debian}}
ROOT_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive)
CHILD=""

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

# debootstrap and systemd-nspawn, from the host's Debian.
host_tools() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    step sh -c 'timeout 300 apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "$@"' sh "${missing[@]}" \
        >/tmp/rrd-debian-apt.log 2>&1 ||
        fail "apt-get install ${missing[*]} failed: $(tail -5 /tmp/rrd-debian-apt.log)"
}

# Run a command in a root that is not booted: systemd-nspawn mounts /proc, /dev and friends,
# and the host's network is shared (apt reaches the mirror).
in_root() {
    local root=$1 limit=$2
    shift 2
    # Debian 12's nspawn says "Attempted to remove disk file system under
    # /run/systemd/nspawn/propagate/..." on every exit without a boot: noise, not the command's.
    timeout "$limit" systemd-nspawn -q -D "$root" --register=no --keep-unit --pipe \
        "${ROOT_ENV[@]}" "$@" 2> >(grep -v --line-buffered '^Attempted to remove disk file system under' >&2)
}

# Complete (debootstrap finished), every listed package installed, and apt's package lists
# present (so that `apt install ./rrd.deb` resolves dependencies without a download first).
# shellcheck disable=SC2016,SC2086 # ${Status} is dpkg-query's; the list is one package per word
root_ok() {
    local root=$1 include=$2
    [ -f "$root/.rrd-root-complete" ] &&
        compgen -G "$root/var/lib/apt/lists/*_Packages" >/dev/null &&
        [ "$(chroot "$root" dpkg-query -W -f='${Status}\n' ${include//,/ } 2>/dev/null |
            grep -c '^install ok installed$')" -eq "$(tr , '\n' <<<"$include" | wc -l)" ]
}

# The cached root of PURPOSE with the packages INCLUDE (comma-separated): its path in
# $ROOT_CACHE, built when missing or broken.
cached_root() {
    local purpose=$1 include=$2 key cache t0
    key=$(printf '%s minbase+apt %s' "$SUITE" "$include" | sha256sum | cut -c1-12)
    cache=/var/tmp/rrd-$purpose-root-$key
    exec 9>"$cache.lock"
    flock -w 900 9 || fail "another run holds $cache.lock"
    if root_ok "$cache" "$include"; then
        say "Debian $SUITE root: cached in $cache"
    else
        say "building the Debian $SUITE root in $cache (a minute or two)"
        rm -rf --one-file-system "$cache" "$cache.new"
        t0=$(date +%s)
        step timeout 900 debootstrap --variant=minbase "$SUITE" "$cache.new" "$MIRROR" \
            >"$cache.log" 2>&1 || fail "debootstrap failed (see $cache.log): $(tail -3 "$cache.log")"
        step in_root "$cache.new" 300 apt-get update -qq >>"$cache.log" 2>&1 ||
            fail "apt-get update in the new root failed (see $cache.log)"
        # shellcheck disable=SC2086 # one package per word
        step in_root "$cache.new" 900 apt-get install -y -qq --no-install-recommends \
            ${include//,/ } >>"$cache.log" 2>&1 ||
            fail "apt-get install in the new root failed (see $cache.log): $(tail -3 "$cache.log")"
        in_root "$cache.new" 60 apt-get clean >>"$cache.log" 2>&1
        touch "$cache.new/.rrd-root-complete"
        mv "$cache.new" "$cache"
        root_ok "$cache" "$include" || fail "the new root in $cache is unusable"
        say "built the root in $(($(date +%s) - t0))s"
    fi
    flock -u 9
    exec 9>&-
    # shellcheck disable=SC2034 # the caller's
    ROOT_CACHE=$cache
}

# A throwaway root in $1/root over the cached root $2: its path in $ROOT; $MERGED is set when it
# is an overlay mount, which the caller unmounts.
throwaway_root() {
    local work=$1 cache=$2
    mkdir -p "$work/upper" "$work/overlay-work" "$work/root"
    if mount -t overlay overlay \
        -o "lowerdir=$cache,upperdir=$work/upper,workdir=$work/overlay-work" "$work/root" 2>/dev/null; then
        # shellcheck disable=SC2034 # the caller's
        MERGED=$work/root
        say "throwaway root: an overlay of the cache"
    else
        cp -a --reflink=auto "$cache/." "$work/root/" || fail "cannot copy $cache"
        say "throwaway root: a copy of the cache (no overlayfs here)"
    fi
    # shellcheck disable=SC2034 # the caller's
    ROOT=$work/root
}

# The checkout as it is (uncommitted changes too), without .venv, caches, build/ or dist/.
copy_checkout() {
    local repo=$1 dest=$2
    mkdir -p "$dest"
    if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$repo" ls-files -z -co --exclude-standard |
            (cd "$repo" && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) |
            tar -xf - -C "$dest"
    else
        tar -C "$repo" --exclude=.venv --exclude=.git --exclude=build --exclude=dist \
            --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -xf - -C "$dest"
    fi
}

# The version the package gets: pyproject's (debian/changelog must agree; the build checks).
package_version() {
    sed -n 's/^version = "\([^"]*\)"$/\1/p' "$1/pyproject.toml" | head -1 | grep .
}
