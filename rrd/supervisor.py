"""The daemon core: one loop where signals (and later control commands and file changes)
become Commands on one queue, and the plugins' lifecycle.

Room: supervisor. Imports plugins and everything below them; never cli.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from enum import Enum

from rrd.clock import Clock, SystemClock
from rrd.config import Config
from rrd.plugins.base import Disabled, Plugin, PluginContext, Resettable
from rrd.server import Server
from rrd.worker import kill_all_workers

log = logging.getLogger("rrd.supervisor")


class Command(Enum):
    """Everything the supervisor can be asked to do, whichever way the request came."""

    STOP = "stop"
    RESET = "reset"


SIGNAL_COMMANDS = {
    signal.SIGTERM: Command.STOP,
    signal.SIGINT: Command.STOP,
    signal.SIGHUP: Command.RESET,
}


class Supervisor:
    """Starts the enabled plugins, serves Commands until asked to stop, then stops them."""

    def __init__(
        self, config: Config, plugins: Mapping[str, type[Plugin]], *, clock: Clock | None = None
    ) -> None:
        self.config = config
        self.plugin_classes = dict(plugins)
        self.clock = clock or SystemClock()
        self.serving: list[Plugin] = []
        self.stopping = False
        self._commands: asyncio.Queue[Command] | None = None

    def request(self, command: Command) -> None:
        """Queue a command; safe from signal handlers and callbacks on the loop."""
        if self._commands is not None:
            self._commands.put_nowait(command)

    async def run(self) -> None:
        """Serve until a STOP command; every plugin is stopped on the way out, whatever happens."""
        self._commands = asyncio.Queue()
        with self._signal_handlers():
            try:
                await self._start()
                while (command := await self._commands.get()) is not Command.STOP:
                    await self._handle(command)
                log.info("stopping", extra={"event": "supervisor.stopping"})
            finally:
                self.stopping = True
                await self._stop()
        log.info("stopped", extra={"event": "supervisor.stopped"})

    async def _start(self) -> None:
        server = Server(self.config)
        await server.run_on_init()
        ctx = PluginContext(self.config, server, self.clock)
        enabled: list[Plugin] = []
        for cls in self.plugin_classes.values():
            plugin = cls()
            try:
                plugin.init(ctx)
            except Disabled:
                continue
            enabled.append(plugin)
        enabled.sort(key=lambda p: p.weight, reverse=True)
        if not enabled:
            log.warning(
                f"no plugin is enabled by {self.config.source}; nothing to serve",
                extra={"event": "supervisor.idle"},
            )
        for plugin in enabled:
            await plugin.serve()
            self.serving.append(plugin)
        log.info(
            f"serving {', '.join(p.name for p in enabled) or 'nothing'}",
            extra={
                "event": "supervisor.ready",
                "pid": os.getpid(),
                "plugins": [p.name for p in enabled],
                "config": str(self.config.source),
            },
        )

    async def _handle(self, command: Command) -> None:
        if command is Command.RESET:
            log.info("resetting workers", extra={"event": "supervisor.reset"})
            for plugin in self.serving:
                if isinstance(plugin, Resettable):
                    await plugin.reset()

    async def _stop(self) -> None:
        """Stop the serving plugins in reverse order, one after another."""
        while self.serving:
            plugin = self.serving.pop()
            try:
                await plugin.stop()
            except Exception:
                log.exception(
                    f"plugin {plugin.name} failed to stop cleanly",
                    extra={"event": "plugin.stop_failed", "plugin": plugin.name},
                )

    def _on_signal(self, signum: signal.Signals, command: Command) -> None:
        """Queue the signal's command; a stop signal during a graceful stop stops now."""
        if self.stopping and command is Command.STOP:
            killed = kill_all_workers()
            log.warning(
                f"{signum.name} again: stopping now; killed {killed} workers",
                extra={"event": "supervisor.stop_now", "workers": killed},
            )
            return
        self.request(command)

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        """Signals only queue a Command; handlers live exactly as long as `run`."""
        loop = asyncio.get_running_loop()
        for signum, command in SIGNAL_COMMANDS.items():
            loop.add_signal_handler(signum, self._on_signal, signum, command)
        try:
            yield
        finally:
            for signum in SIGNAL_COMMANDS:
                loop.remove_signal_handler(signum)
