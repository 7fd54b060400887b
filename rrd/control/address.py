"""Where the control socket is: the same answer for the daemon and for every CLI command.

Room: control. `rpc.listen` when the config has an `rpc` section (RoadRunner's key: also what
PHP workers get as RR_RPC); else a unix socket in a directory only rrd's user can use:

1. `$RUNTIME_DIRECTORY` (systemd's RuntimeDirectory=), as `rrd.sock`;
2. beside `--pidfile`, when the pidfile's directory is safe (owned by rrd's uid or root, and
   writable by nobody else); else the pidfile is only a pidfile and the next rule applies;
3. `/run/rrd/` as root, `$XDG_RUNTIME_DIR/rrd/` otherwise; but root's CLI first looks for the
   socket of the shipped units when the config is theirs: rrd.service serves /etc/rrd/rr.yaml
   at /run/rrd/rrd.sock, rrd@NAME.service /etc/rrd/NAME.yaml at /run/rrd-NAME/rrd.sock (their
   RuntimeDirectory=, owned by the unit's user: the CLI trusts that server by its peer
   credentials, in client.py), so that `sudo rrd status -c /etc/rrd/rr.yaml` finds it;
4. only when neither exists, `rrd-<uid>/` in the temp directory, created 0700 and refused when
   it is not a directory owned by that uid or is open to others (tmux's rule), so that another
   local user cannot create it first and answer in rrd's place.

In 3 and 4 the socket is named after the config file (a CRC of its path), so that two rrd
instances never share one. A directory that breaks its rule is refused, with the reason and
its owner, never used and never removed.
"""

from __future__ import annotations

import os
import pwd
import stat
import zlib
from collections.abc import Mapping
from pathlib import Path

from rrd.config.schema import is_loopback as is_loopback
from rrd.errors import RrdError

SOCKET_NAME = "rrd.sock"
RUN = Path("/run")
"""Where root's sockets go (as /run/rrd): systemd's and the FHS's runtime directory."""
UNITS_CONFIG = Path("/etc/rrd")
"""The configs of rrd.service and rrd@NAME.service (their ConfigurationDirectory=)."""

EX_NOPERM = 77


class UnsafeControlPath(RrdError):
    """A directory or file at the control socket's place that rrd must not trust."""

    exit_code = EX_NOPERM


def control_address(
    source: Path,
    workdir: Path,
    *,
    listen: str | None = None,
    pidfile: str | None = None,
    environ: Mapping[str, str] | None = None,
    uid: int | None = None,
    create: bool = False,
    run: Path = RUN,
) -> str:
    """`unix:///path` or `tcp://host:port` of the control socket of the rrd serving the config
    file `source` from `workdir`: `listen` (rpc.listen) when set. With `create` (the daemon),
    a default directory that does not exist yet is made; UnsafeControlPath for one that
    breaks its rule."""
    if listen is not None:
        return _absolute(listen, workdir)
    env = os.environ if environ is None else environ
    uid = os.geteuid() if uid is None else uid
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        if create:  # the CLI trusts the server itself, by its peer credentials (client.py)
            check_directory(Path(runtime), uid)
        return f"unix://{Path(runtime, SOCKET_NAME)}"
    if pidfile:
        beside = Path(workdir, pidfile).with_suffix(".sock")
        if directory_problem(beside.parent, uid) is None:
            return f"unix://{beside}"
    if uid == 0 and not create:
        unit_socket = units_socket(source, run)
        if unit_socket is not None:
            return f"unix://{unit_socket}"
    folder = default_directory(env, uid, create=create, run=run)
    return f"unix://{folder / f'rrd-{zlib.crc32(str(source).encode()):08x}.sock'}"


def units_socket(source: Path, run: Path = RUN) -> Path | None:
    """The socket of the shipped unit serving `source`, when it is there: rrd.service's for
    /etc/rrd/rr.yaml, else rrd@NAME.service's for /etc/rrd/NAME.yaml."""
    if source.parent != UNITS_CONFIG or source.suffix != ".yaml":
        return None
    folders = [run / "rrd"] if source.name == "rr.yaml" else []
    folders.append(run / f"rrd-{source.stem}")
    for folder in folders:
        candidate = folder / SOCKET_NAME
        if candidate.is_socket():
            return candidate
    return None


def default_directory(
    environ: Mapping[str, str], uid: int, *, create: bool = False, run: Path = RUN
) -> Path:
    """The directory of the default socket (rules 3 and 4 above), checked."""
    if uid == 0 and run.is_dir():
        return private_directory(run / "rrd", uid, create=create, mode=0o755)
    xdg = environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return private_directory(Path(xdg, "rrd"), uid, create=create, mode=0o700)
    temp = environ.get("TMPDIR", "")
    temp = temp if temp and os.path.isabs(temp) else "/tmp"
    return private_directory(Path(temp, f"rrd-{uid}"), uid, create=create, mode=0o700)


def private_directory(path: Path, uid: int, *, create: bool, mode: int) -> Path:
    """`path`, made with `mode` if missing and `create`, and refused unless it is a directory
    (not a symlink) owned by `uid` and open to nobody else beyond `mode`."""
    if create:
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass
        except OSError as exc:
            raise UnsafeControlPath(
                f"cannot create the control socket directory {path}: {exc.strerror}"
            ) from None
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return path  # nothing there yet: nobody answers at it, and nothing is trusted
    except OSError as exc:
        raise UnsafeControlPath(f"cannot use the control socket directory {path}: {exc}") from None
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = f"is {kind_of(info.st_mode)}, not a directory"
    elif info.st_uid != uid:
        problem = f"is owned by {who(info.st_uid)}, not by {who(uid)}"
    elif stat.S_IMODE(info.st_mode) & ~mode & 0o077:
        problem = f"has mode {stat.S_IMODE(info.st_mode):04o}: open to other users"
    if problem is not None:
        raise UnsafeControlPath(
            f"refusing the control socket directory {path}: it {problem}; "
            "another user may have made it to stand in for rrd: remove it"
        )
    return path


def check_directory(path: Path, uid: int) -> None:
    """UnsafeControlPath unless `path` is a safe home for a socket (see directory_problem)."""
    problem = directory_problem(path, uid)
    if problem is not None:
        raise UnsafeControlPath(f"refusing the control socket directory {path}: it {problem}")


def directory_problem(path: Path, uid: int, *, sticky_ok: bool = False) -> str | None:
    """Why `path` is no safe home for `uid`'s socket, or None: it must be a directory owned by
    `uid` or root and writable by nobody else (with `sticky_ok`, a sticky one as /tmp may be:
    nobody can remove or replace another's file there)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not stat.S_ISDIR(info.st_mode):
        return f"is {kind_of(info.st_mode)}, not a directory"
    if info.st_uid not in (uid, 0):
        return f"is owned by {who(info.st_uid)}, not by {who(uid)} or root"
    if info.st_mode & 0o022 and not (sticky_ok and info.st_mode & stat.S_ISVTX):
        return f"has mode {stat.S_IMODE(info.st_mode):04o}: other users may write in it"
    return None


def kind_of(mode: int) -> str:
    """`a symlink`, `a regular file`...: what a file is, for a message."""
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISFIFO, "a FIFO"),
    ):
        if test(mode):
            return name
    return "a device"


def who(uid: int) -> str:
    """`uid 65534 (nobody)`: a uid as a person reads it."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _absolute(address: str, workdir: Path) -> str:
    """A relative `unix://` path is the workdir's, as the config's other paths are."""
    if address.startswith("unix://") and not address.startswith("unix:///"):
        return f"unix://{workdir / address.removeprefix('unix://')}"
    return address


def socket_path(address: str) -> str | None:
    """The file of a `unix://` address, None for TCP."""
    return address.removeprefix("unix://") if address.startswith("unix://") else None


def tcp_host_port(address: str) -> tuple[str, int]:
    """(host, port) of a `tcp://host:port` address; an empty host is 127.0.0.1."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)
