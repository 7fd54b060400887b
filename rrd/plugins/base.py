"""The plugin contract, RoadRunner's in Python: name, weight, config class, init, serve, stop.

Room: plugins. Imports server, pool, worker, stats, clock, config and errors; never the daemon
core.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from rrd.clock import Clock, SystemClock
from rrd.config import Config, ReloadPlan
from rrd.pool import CrashHandler
from rrd.server import Server
from rrd.stats import Histogram
from rrd.worker import WorkerInfo

log = logging.getLogger("rrd.plugins")


def log_crash(where: str, error: BaseException) -> None:
    """What a crash report does when no daemon listens (tests, tools): log it."""
    log.critical(
        f"{where} failed on a bug in rrd", exc_info=error, extra={"event": "plugin.crashed"}
    )


class Disabled(Exception):
    """Raised by `init` when the plugin has nothing to do (its section is absent)."""


@dataclass(frozen=True)
class PluginContext:
    """What a plugin is given at init: the config, the server to ask for pools, the clock, and
    `crashed(where, error)`, to call when a task of the plugin dies of a bug: the daemon then
    stops everything gracefully and exits 70, so that systemd restarts it."""

    config: Config
    server: Server
    clock: Clock = field(default_factory=SystemClock)
    crashed: CrashHandler = log_crash

    def section(self, name: str) -> Any:
        """The plugin's parsed config section, or None when the file has none."""
        return self.config.sections.get(name)


class Plugin(ABC):
    """A feature fed by config. Higher `weight` serves earlier and stops later."""

    name: ClassVar[str]
    weight: ClassVar[int] = 10
    config_class: ClassVar[type | None] = None

    @abstractmethod
    def init(self, ctx: PluginContext) -> None:
        """Read the config; raise Disabled when the section is absent."""

    @abstractmethod
    async def serve(self) -> None:
        """Start serving (pools, timers) and return once running."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop serving and release every worker; return when they are gone.

        Called even when `serve` failed or was cancelled half way: stop what did start."""


# What a plugin may also do: the daemon looks for these capabilities, RoadRunner's way.


@runtime_checkable
class Resettable(Protocol):
    """A plugin whose workers can be replaced on `rrd reset` / SIGHUP."""

    async def reset(self) -> None: ...


@runtime_checkable
class Informer(Protocol):
    """A plugin that can list its workers for `rrd workers`."""

    def workers(self) -> list[WorkerInfo]: ...


@runtime_checkable
class Reconfigurable(Protocol):
    """A plugin that takes a reload's new config in place (`ctx` is built on it), doing what
    the plan says for its section; without this, a change to its section needs a restart."""

    async def reconfigure(self, ctx: PluginContext, plan: ReloadPlan) -> None: ...


@runtime_checkable
class Scalable(Protocol):
    """A plugin whose pool can be resized at run time (`rrd scale`)."""

    def scale(self, workers: int) -> None:
        """ValueError, with a message for the operator, for a size the pool refuses."""


@runtime_checkable
class Reporter(Protocol):
    """A plugin that tells its state for `rrd status` and STATUS= (JSON-ready)."""

    def status(self) -> dict[str, Any]: ...


@runtime_checkable
class Measured(Protocol):
    """A plugin that records histograms for /metrics, by name (`exec_duration_seconds`,
    `tick_lateness_seconds`); empty until it serves."""

    def histograms(self) -> Mapping[str, Histogram]: ...


@runtime_checkable
class Scheduling(Protocol):
    """A plugin with named schedules an operator may list, pause, resume and run
    (`rrd ticker ...`); ValueError, with a message, for a name that is no schedule."""

    def schedules(self) -> list[dict[str, Any]]: ...
    def pause(self, name: str) -> bool: ...
    def resume(self, name: str) -> bool: ...
    def run_now(self, name: str) -> None: ...
