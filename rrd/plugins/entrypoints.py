"""Whether any installed distribution declares an rrd plugin, found without importing much.

Room: plugins, but imports nothing of rrd and nothing heavy: `rrd.__main__` asks it before
asyncio is imported, and the registry asks it before importlib.metadata is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

ENTRY_POINT_GROUP = "rrd.plugins"


def declared_anywhere(paths: Iterable[str] | None = None) -> bool:
    """Whether any installed distribution on `paths` (sys.path) declares an rrd.plugins entry
    point: a look at their entry_points.txt files, without importing importlib.metadata."""
    section = f"[{ENTRY_POINT_GROUP}]"
    for folder in sys.path if paths is None else paths:
        try:
            entries = os.scandir(folder or ".")
        except OSError:
            continue
        with entries:
            for entry in entries:
                if not entry.name.endswith((".dist-info", ".egg-info")):
                    continue
                try:
                    with open(os.path.join(entry.path, "entry_points.txt"), encoding="utf-8") as f:
                        if section in f.read():
                            return True
                except (OSError, UnicodeDecodeError):
                    continue
    return False


def skip_openssl() -> None:
    """Let `rrd serve` go without OpenSSL (4 MiB of its RSS) when nothing could use it.

    asyncio imports `ssl` whether or not TLS is used; rrd's daemon and its built-in plugins
    never use TLS. A third-party plugin might, so OpenSSL is skipped only when no installed
    distribution declares an rrd plugin. asyncio then works without TLS.
    """
    if "ssl" not in sys.modules and not declared_anywhere():
        sys.modules["ssl"] = None  # type: ignore[assignment]  # makes `import ssl` fail


def allow_openssl() -> None:
    """Undo `skip_openssl`, so that a real `import ssl` works again.

    For what needs it after start: prometheus_client imports `ssl` at its top (for its push
    and TLS server paths, which rrd does not use), so /metrics costs OpenSSL's RSS.
    """
    if "ssl" in sys.modules and sys.modules["ssl"] is None:
        del sys.modules["ssl"]
