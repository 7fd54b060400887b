"""Which plugins exist: the built-ins, listed here, and third-party ones from entry points.

Room: plugins. A third-party plugin is a pip-installed package that registers its Plugin class
under the `rrd.plugins` entry-point group: rrd's answer to rebuilding RoadRunner with Velox.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from rrd.plugins.base import Plugin
from rrd.plugins.entrypoints import ENTRY_POINT_GROUP, declared_anywhere
from rrd.plugins.ticker import TickerPlugin

log = logging.getLogger("rrd.plugins")

BUILTINS: tuple[type[Plugin], ...] = (TickerPlugin,)


def _entry_points() -> Iterable[Any]:
    # importlib.metadata imports email, zipfile and csv: 2 MiB of a daemon that must stay
    # light. It is loaded only when some distribution does declare an rrd plugin.
    if not declared_anywhere():
        return ()
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINT_GROUP)


def installed() -> dict[str, type[Plugin]]:
    """Every plugin rrd can run, by name; a third-party plugin that fails to load is skipped."""
    plugins: dict[str, type[Plugin]] = {cls.name: cls for cls in BUILTINS}
    for entry in _entry_points():
        try:
            candidate = entry.load()
        except Exception as exc:  # a broken third-party package must not stop rrd
            log.warning(
                f"plugin {entry.name!r} ({entry.value}) could not be loaded: {exc}",
                extra={"event": "plugin.load_failed", "plugin": entry.name},
            )
            continue
        if not (isinstance(candidate, type) and issubclass(candidate, Plugin)):
            log.warning(
                f"entry point {entry.name!r} ({entry.value}) is not an rrd Plugin class",
                extra={"event": "plugin.load_failed", "plugin": entry.name},
            )
            continue
        if candidate.name in plugins:
            log.warning(
                f"plugin name {candidate.name!r} from {entry.value} is taken; ignoring it",
                extra={"event": "plugin.load_failed", "plugin": candidate.name},
            )
            continue
        plugins[candidate.name] = candidate
    return plugins


def config_sections(plugins: Mapping[str, type[Plugin]]) -> dict[str, type]:
    """The config sections the plugins own, for the loader and `rrd config docs`."""
    return {name: cls.config_class for name, cls in plugins.items() if cls.config_class is not None}
