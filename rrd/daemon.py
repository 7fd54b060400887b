"""The daemon core: a small state machine, one queue of Commands, and the plugins' lifecycle.

Room: daemon (the core tier, beside control, watch, notify and logging). Imports plugins and
everything below them; never cli.

Signals (and, next, control-socket requests and config changes) become Commands on one queue.
The core runs the boot and every command as a task it owns, one at a time. STOP preempts:
it cancels the boot or reset in flight, then stops whatever did start. A second STOP during
the stop kills every worker and ends rrd at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from enum import Enum

from rrd import logging as rrd_logging
from rrd.clock import Clock, SystemClock
from rrd.config import Config
from rrd.errors import EX_SOFTWARE, RrdError
from rrd.plugins.base import Disabled, Plugin, PluginContext, Resettable
from rrd.proc import ProcessRegistry, become_subreaper
from rrd.server import Server
from rrd.signals import EarlySignals

log = logging.getLogger("rrd.daemon")

EX_STOPPED_NOW = 1
"""Exit code when a second stop signal cut the graceful stop short."""

STOP_NOW_GRACE = 1.0
"""After a second stop signal, how long the stop may still take once every worker is killed."""

REAP_DELAY = 0.05
"""SIGCHLDs come in bursts: adopted orphans are looked for once per this many seconds."""


class DaemonState(Enum):
    """Where the daemon is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Command(Enum):
    """Everything the daemon can be asked to do, whichever way the request came."""

    STOP = "stop"
    RESET = "reset"
    REOPEN_LOGS = "reopen_logs"


SIGNAL_COMMANDS = {
    signal.SIGTERM: Command.STOP,
    signal.SIGINT: Command.STOP,
    signal.SIGHUP: Command.RESET,
    signal.SIGUSR1: Command.REOPEN_LOGS,
}


class Daemon:
    """Starts the enabled plugins, runs Commands until asked to stop, then stops them."""

    def __init__(
        self,
        config: Config,
        plugins: Mapping[str, type[Plugin]],
        *,
        clock: Clock | None = None,
        registry: ProcessRegistry | None = None,
        early: EarlySignals | None = None,
    ) -> None:
        self.config = config
        self.plugin_classes = dict(plugins)
        self.clock = clock or SystemClock()
        self.registry = registry if registry is not None else ProcessRegistry()
        self.early = early
        self.state = DaemonState.STARTING
        self.exit_code = 0
        self.started: list[Plugin] = []
        """Plugins whose `serve` began, in start order: each is stopped, even half-started."""
        self._queue: asyncio.Queue[Command] = asyncio.Queue()
        self._current: asyncio.Task[None] | None = None
        self._stopped_now = asyncio.Event()
        self._reaping: asyncio.TimerHandle | None = None

    def request(self, command: Command) -> None:
        """Queue a command (from a signal handler or a callback on the loop).

        STOP preempts the boot or reset in flight; a STOP while stopping stops now."""
        if command is Command.STOP:
            if self.state is DaemonState.STOPPING:
                self._stop_now()
                return
            if self.state is not DaemonState.STOPPED:
                self.state = DaemonState.STOPPING
                if self._current is not None:
                    self._current.cancel()
        self._queue.put_nowait(command)

    def crashed(self, where: str, error: BaseException) -> None:
        """A task of a plugin or pool died of a bug: stop everything gracefully, exit 70."""
        log.critical(
            f"{where} failed on a bug in rrd; stopping",
            exc_info=error,
            extra={"event": "daemon.crashed", "where": where},
        )
        if not self.exit_code:
            self.exit_code = EX_SOFTWARE
        if self.state is not DaemonState.STOPPING:
            self.request(Command.STOP)

    async def run(self) -> int:
        """Boot, serve commands until STOP, stop every plugin; return the exit code."""
        subreaper = become_subreaper()
        with self._signal_handlers(subreaper):
            await self._run_task(self._boot(), "boot")
            if self.state is DaemonState.STARTING:
                self.state = DaemonState.RUNNING
                self._log_ready()
            while self.state is DaemonState.RUNNING:
                for command in await self._next_commands():
                    if self.state is not DaemonState.RUNNING:
                        break
                    if command is Command.RESET:
                        await self._run_task(self._reset(), "reset")
                    elif command is Command.REOPEN_LOGS:
                        rrd_logging.reopen()  # the writer thread reopens; nothing waits here
            await self._stop()
        return self.exit_code

    async def _next_commands(self) -> list[Command]:
        """The commands waiting now, each once, in order: repeated resets coalesce."""
        commands = [await self._queue.get()]
        while not self._queue.empty():
            commands.append(self._queue.get_nowait())
        return list(dict.fromkeys(commands))

    async def _run_task(self, coroutine: object, name: str) -> None:
        """Run a boot or a command as a task STOP can cancel; a failure in it stops rrd."""
        assert asyncio.iscoroutine(coroutine)
        task: asyncio.Task[None] = asyncio.create_task(coroutine, name=name)
        self._current = task
        try:
            await asyncio.wait({task})
        finally:
            self._current = None
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        if isinstance(error, RrdError):
            log.error(str(error), extra={"event": "daemon.failed", "exit_code": error.exit_code})
            self.exit_code = self.exit_code or error.exit_code
        else:
            self.crashed(f"the {name}", error)
        self.state = DaemonState.STOPPING

    async def _boot(self) -> None:
        server = Server(self.config, self.registry)
        await server.run_on_init()
        ctx = PluginContext(self.config, server, self.clock, crashed=self.crashed)
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
                extra={"event": "daemon.idle"},
            )
        for plugin in enabled:
            self.started.append(plugin)
            await plugin.serve()

    async def _reset(self) -> None:
        log.info("resetting workers", extra={"event": "daemon.reset"})
        for plugin in self.started:
            if isinstance(plugin, Resettable):
                await plugin.reset()

    async def _stop(self) -> None:
        """Stop the started plugins in reverse order, one after another; a second stop signal
        kills every worker and gives the rest STOP_NOW_GRACE."""
        self.state = DaemonState.STOPPING
        log.info("stopping", extra={"event": "daemon.stopping"})
        stopping = asyncio.create_task(self._stop_plugins(), name="stop")
        stopped_now = asyncio.create_task(self._stopped_now.wait())
        await asyncio.wait({stopping, stopped_now}, return_when=asyncio.FIRST_COMPLETED)
        stopped_now.cancel()
        if not stopping.done():
            await asyncio.wait({stopping}, timeout=STOP_NOW_GRACE)
            stopping.cancel()
            await asyncio.gather(stopping, return_exceptions=True)
        await self._end_orphans()
        self.state = DaemonState.STOPPED
        log.info("stopped", extra={"event": "daemon.stopped", "exit_code": self.exit_code})

    async def _stop_plugins(self) -> None:
        while self.started:
            plugin = self.started.pop()
            try:
                await plugin.stop()
            except Exception:
                log.exception(
                    f"plugin {plugin.name} failed to stop cleanly",
                    extra={"event": "plugin.stop_failed", "plugin": plugin.name},
                )

    async def _end_orphans(self) -> None:
        """Kill the adopted orphans still alive (a worker's double-forked grandchildren) and
        reap them, within STOP_NOW_GRACE."""
        killed = self.registry.kill_orphans()
        if killed:
            log.warning(
                f"killed {len(killed)} processes that workers had left behind",
                extra={"event": "daemon.orphans_killed", "pids": killed},
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_NOW_GRACE
        while self.registry.orphans() and loop.time() < deadline:
            self.registry.reap_orphans()
            await asyncio.sleep(REAP_DELAY)

    def _on_child_exit(self) -> None:
        if self._reaping is None:
            loop = asyncio.get_running_loop()
            self._reaping = loop.call_later(REAP_DELAY, self._reap_orphans)

    def _reap_orphans(self) -> None:
        """Reap the adopted orphans that died: a subreaper that does not leaves zombies."""
        self._reaping = None
        if self.registry.busy_spawning:
            self._on_child_exit()  # a spawn's child may not be in the registry yet: later
            return
        for pid in self.registry.reap_orphans():
            log.info(
                f"reaped process {pid}, an orphan a worker left behind",
                extra={"event": "daemon.orphan_reaped", "pid": pid},
            )

    def _stop_now(self) -> None:
        if self._stopped_now.is_set():
            return
        killed = self.registry.kill_all() + len(self.registry.kill_orphans())
        log.warning(
            f"asked to stop again: stopping now; killed {killed} workers",
            extra={"event": "daemon.stop_now", "workers": killed},
        )
        self.exit_code = EX_STOPPED_NOW
        self._stopped_now.set()

    def _log_ready(self) -> None:
        names = [p.name for p in self.started]
        log.info(
            f"serving {', '.join(names) or 'nothing'}",
            extra={
                "event": "daemon.ready",
                "pid": os.getpid(),
                "plugins": names,
                "config": str(self.config.source),
            },
        )

    def _on_signal(self, signum: signal.Signals) -> None:
        command = SIGNAL_COMMANDS.get(signum)
        if command is not None:
            log.info(
                f"{signum.name}: {command.value}",
                extra={"event": "daemon.signal", "signal": signum.name},
            )
            self.request(command)

    @contextlib.contextmanager
    def _signal_handlers(self, subreaper: bool) -> Iterator[None]:
        """The loop's handlers only queue Commands; signals held since start-up go first.
        As a subreaper rrd also hears SIGCHLD, to reap the orphans it adopts."""
        loop = asyncio.get_running_loop()
        for signum in SIGNAL_COMMANDS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        if subreaper:
            loop.add_signal_handler(signal.SIGCHLD, self._on_child_exit)
        if self.early is not None:
            for signum in self.early.take():
                self._on_signal(signum)
        try:
            yield
        finally:
            for signum in (*SIGNAL_COMMANDS, signal.SIGCHLD):
                loop.remove_signal_handler(signum)
            if self._reaping is not None:
                self._reaping.cancel()
            if self.early is not None:
                self.early.hold()  # until rrd exits, a late signal changes nothing
