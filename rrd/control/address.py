"""Where the control socket is: the same answer for the daemon and for every CLI command.

Room: control. `rpc.listen` when the config has an `rpc` section (RoadRunner's key: also what
PHP workers get as RR_RPC); else a unix socket in `$RUNTIME_DIRECTORY` (systemd's
RuntimeDirectory=), beside the pidfile, or in the user's runtime directory, named after the
config file so that two rrd instances never share one.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path

SOCKET_NAME = "rrd.sock"


def control_address(
    source: Path,
    workdir: Path,
    *,
    listen: str | None = None,
    pidfile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """`unix:///path` or `tcp://host:port` of the control socket of the rrd serving the config
    file `source` from `workdir`: `listen` (rpc.listen) when set."""
    if listen is not None:
        return _absolute(listen, workdir)
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return f"unix://{Path(runtime, SOCKET_NAME)}"
    if pidfile:
        return f"unix://{Path(workdir, pidfile).with_suffix('.sock')}"
    folder = env.get("XDG_RUNTIME_DIR") or env.get("TMPDIR") or "/tmp"
    name = f"rrd-{os.getuid()}-{zlib.crc32(str(source).encode()):08x}.sock"
    return f"unix://{Path(folder, name)}"


def _absolute(address: str, workdir: Path) -> str:
    """A relative `unix://` path is the workdir's, as the config's other paths are."""
    if address.startswith("unix://") and not address.startswith("unix:///"):
        return f"unix://{workdir / address.removeprefix('unix://')}"
    return address


def socket_path(address: str) -> str | None:
    """The file of a `unix://` address, None for TCP."""
    return address.removeprefix("unix://") if address.startswith("unix://") else None
