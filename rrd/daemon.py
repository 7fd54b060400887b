"""The daemon core: a small state machine, one queue of requests, the plugins' lifecycle.

Room: daemon (the core tier, beside control, watch, notify and logging). Imports plugins and
everything below them; never cli.

Signals, control-socket calls and config-file changes all become requests on one queue; the
core runs the boot and each command as a task it owns, one at a time. STOP preempts: it
cancels the boot, reset or reload in flight, then stops whatever did start; a second STOP kills
every worker and ends rrd at once. Reloads coalesce (a file change folds into a SIGHUP's
reload), as do identical resets. systemd hears the truth at each step (READY, RELOADING with
MONOTONIC_USEC, STATUS, STOPPING, WATCHDOG pings from this loop only).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from rrd import __version__
from rrd import logging as rrd_logging
from rrd.clock import Clock, SystemClock
from rrd.config import Config, ReloadPlan, diff, pin
from rrd.control.api import OperatorApi
from rrd.control.commands import Command, Request, same_outcome
from rrd.control.server import Access, ControlServer
from rrd.errors import EX_SOFTWARE, ConfigError, RrdError
from rrd.notify import Notifier
from rrd.plugins.base import (
    Disabled,
    Plugin,
    PluginContext,
    Reconfigurable,
    Reporter,
    Resettable,
    Scalable,
)
from rrd.proc import ProcessRegistry, become_subreaper
from rrd.protocol.rpc import RpcError
from rrd.server import Server
from rrd.signals import EarlySignals

if TYPE_CHECKING:
    from rrd.http.endpoints import Endpoints
    from rrd.watch import ConfigWatcher

log = logging.getLogger("rrd.daemon")

EX_STOPPED_NOW = 1
"""Exit code when a second stop signal cut the graceful stop short."""

STOP_NOW_GRACE = 1.0
"""After a second stop signal, how long the stop may still take once every worker is killed."""

REAP_DELAY = 0.05
"""SIGCHLDs come in bursts: adopted orphans are looked for once per this many seconds."""

STATUS_EVERY = 5.0
"""How often STATUS= is refreshed (only when its text changed)."""

CONFIG_READ_TIMEOUT = 30.0
"""A reload that cannot read its files in this long is refused (the running config stays)."""

EXTEND_BY = 15.0
"""While stopping, EXTEND_TIMEOUT_USEC= asks systemd for this much more, every third of it."""

ConfigLoader = Callable[[], Config]


class DaemonState(Enum):
    """Where the daemon is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload did: for `rrd reload`, `rrd status` and STATUS=."""

    generation: int
    applied: bool
    source: str
    changes: list[str]
    restart_needed: list[str]
    error: str | None
    at: float
    duration_ms: float


SIGNAL_COMMANDS = {
    signal.SIGTERM: Request(Command.STOP, {"signal": True}),
    signal.SIGINT: Request(Command.STOP, {"signal": True}),
    signal.SIGHUP: Request(Command.RELOAD, {"reset": True, "source": "SIGHUP"}),
    signal.SIGUSR1: Request(Command.REOPEN_LOGS),
}


class Daemon:
    """Starts the enabled plugins, runs requests until asked to stop, then stops them."""

    def __init__(
        self,
        config: Config,
        plugins: Mapping[str, type[Plugin]],
        *,
        clock: Clock | None = None,
        registry: ProcessRegistry | None = None,
        early: EarlySignals | None = None,
        load_config: ConfigLoader | None = None,
        control_address: str | None = None,
        watch_files: tuple[str, ...] = (),
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        """The config in force: the last one loaded, pinned at what needs a restart."""
        self.started_with = config
        """The config rrd started with: what needs a restart stays as it says."""
        self.config_loaded_at = time.time()
        self.plugin_classes = dict(plugins)
        self.clock = clock or SystemClock()
        self.registry = registry if registry is not None else ProcessRegistry()
        self.early = early
        self.load_config = load_config
        self.control_address = control_address
        self.watch_files = watch_files
        self.notifier = notifier or Notifier()
        self.state = DaemonState.STARTING
        self.exit_code = 0
        self.started: list[Plugin] = []
        """Plugins whose `serve` began, in start order: each is stopped, even half-started."""
        self.restart_needed: list[str] = []
        self.last_reload: ReloadOutcome | None = None
        self._reloads = 0
        self._queue: asyncio.Queue[Request] = asyncio.Queue()
        self._current: asyncio.Task[Any] | None = None
        self._stopped_now = asyncio.Event()
        self._reaping: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._status_sent = ""
        self._watcher: ConfigWatcher | None = None
        self._endpoints: Endpoints | None = None
        self._reload_results = {"applied": 0, "rejected": 0}
        self.api = OperatorApi(self)
        """What the control socket and the HTTP endpoints answer operators with."""

    @property
    def state_name(self) -> str:
        """The state as operators read it: starting, running, reloading, stopping, stopped."""
        return self.state.value

    def request(self, request: Request) -> None:
        """Queue a request (from a signal handler, a control call or a file change).

        STOP preempts the boot, reset or reload in flight. While stopping, a second stop
        signal or a stop `now` stops now; a repeated graceful `rrd stop` joins the stop."""
        if request.command is Command.STOP:
            if self.state in (DaemonState.STOPPING, DaemonState.STOPPED):
                if request.args.get("signal") or request.args.get("now"):
                    self._stop_now()
                else:
                    log.info(
                        "asked to stop again: the stop goes on",
                        extra={"event": "daemon.stop_joined"},
                    )
                self._answer(request, True)
                return
            self.state = DaemonState.STOPPING
            if self._current is not None:
                self._current.cancel()
            if request.args.get("now"):
                self._stop_now()
        self._queue.put_nowait(request)

    async def ask(self, command: Command, **args: Any) -> Any:
        """Queue a request and wait for its outcome (control calls)."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.request(Request(command, args, reply))
        return await reply

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
            self.request(Request(Command.STOP))

    async def run(self) -> int:
        """Boot, serve requests until STOP, stop every plugin; return the exit code."""
        subreaper = become_subreaper()
        control = None
        if self.control_address:
            access = Access.from_config(self.config.rpc)
            control = ControlServer(self.control_address, self.api.methods(), access=access)
        watcher: ConfigWatcher | None = None
        with self._signal_handlers(subreaper):
            try:
                if control is not None:
                    await control.start()
                await self._serve_endpoints(self.config, at_start=True)
                await self._run_task(self._boot(), "boot")
                if self.state is DaemonState.STARTING:
                    self.state = DaemonState.RUNNING
                    watcher = self._watch_config()
                    self._ready()
                while self.state is DaemonState.RUNNING:
                    for request in self._coalesce(await self._next_requests()):
                        if self.state is not DaemonState.RUNNING:
                            self._answer(request, RpcError("rrd is stopping"))
                            continue
                        await self._run_request(request)
                await self._stop()
            finally:
                if watcher is not None:
                    watcher.stop()
                if self._endpoints is not None:
                    await self._endpoints.close()
                if control is not None:
                    await control.close()
                for task in self._tasks:
                    task.cancel()
                while not self._queue.empty():
                    self._answer(self._queue.get_nowait(), RpcError("rrd stopped"))
        return self.exit_code

    # Requests

    async def _next_requests(self) -> list[Request]:
        requests = [await self._queue.get()]
        while not self._queue.empty():
            requests.append(self._queue.get_nowait())
        return requests

    def _coalesce(self, requests: list[Request]) -> list[Request]:
        """Repeated reloads become one (with a reset if any asked for one), repeated resets
        of the same plugins one; every waiting caller gets the outcome of the one that ran."""
        merged: list[Request] = []
        for request in requests:
            twin = next((m for m in merged if same_outcome(m, request)), None)
            if twin is None:
                merged.append(request)
                continue
            if request.command is Command.RELOAD and request.args.get("reset"):
                twin.args = {**twin.args, "reset": True, "source": request.args.get("source")}
            twin.folded.append(request)
        return merged

    async def _run_request(self, request: Request) -> None:
        command, args = request.command, request.args
        if command is Command.STOP:
            self._answer(request, True)
            return
        if command is Command.REOPEN_LOGS:
            rrd_logging.reopen()  # the writer thread reopens; nothing waits here
            self._answer(request, True)
            return
        runs: dict[Command, Callable[[], Coroutine[Any, Any, Any]]] = {
            Command.RESET: lambda: self._reset(args.get("plugins")),
            Command.RELOAD: lambda: self._reload(
                reset=bool(args.get("reset")), source=str(args.get("source", "?"))
            ),
            Command.SCALE: lambda: self._scale(str(args["plugin"]), args["workers"]),
        }
        outcome = await self._run_task(runs[command](), command.value)
        self._answer(request, outcome)

    def _answer(self, request: Request, outcome: Any) -> None:
        """Give the outcome to whoever waits for this request and those folded into it."""
        for answered in (request, *request.folded):
            reply = answered.reply
            if reply is None or reply.done():
                continue
            if isinstance(outcome, BaseException):
                reply.set_exception(outcome)
            else:
                reply.set_result(outcome)

    async def _run_task(self, coroutine: Coroutine[Any, Any, Any], name: str) -> Any:
        """Run a boot or a command as a task STOP can cancel. A fault the user caused (a bad
        scale, an unknown plugin) fails the request; during the boot it stops rrd. A bug stops
        rrd. Returns the task's result, or the exception for the caller. Once a STOP has come
        (held since start-up, or while the control socket opened) nothing new starts."""
        if self.state in (DaemonState.STOPPING, DaemonState.STOPPED):
            coroutine.close()
            return RpcError(f"{name} was not started: rrd is stopping")
        task: asyncio.Task[Any] = asyncio.create_task(coroutine, name=name)
        self._current = task
        try:
            await asyncio.wait({task})
        finally:
            self._current = None
        if task.cancelled():
            return RpcError(f"{name} was cancelled: rrd is stopping")
        error = task.exception()
        if error is None:
            return task.result()
        if isinstance(error, RrdError):
            if name == "boot":
                failed = {"event": "daemon.failed", "exit_code": error.exit_code}
                log.error(str(error), extra=failed)
                self.exit_code = self.exit_code or error.exit_code
                self.state = DaemonState.STOPPING
            return error
        self.crashed(f"the {name}", error)
        self.state = DaemonState.STOPPING
        return RpcError(f"{name} failed on a bug in rrd")

    # Commands

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

    async def _reset(self, names: list[str] | None = None) -> bool:
        chosen = self.plugins(names, Resettable)
        log.info(
            f"resetting the workers of {', '.join(p.name for p in chosen) or 'nothing'}",
            extra={"event": "daemon.reset", "plugins": [p.name for p in chosen]},
        )
        for plugin in chosen:
            assert isinstance(plugin, Resettable)
            await plugin.reset()
        return True

    async def _reload(self, *, reset: bool, source: str) -> dict[str, Any]:
        """Re-read the config; if it is broken keep the old one and say why; else do what the
        diff says, the least. With `reset` (SIGHUP, `rrd reload`) every pool is replaced too,
        but for those the new config already made replace theirs."""
        self.state = DaemonState.RELOADING
        self.notifier.reloading(f"reloading {self.config.source} ({source})")
        began = time.monotonic()
        self._reloads += 1
        changes: list[str] = []
        restart: list[str] = []
        error: str | None = None
        try:
            try:
                new = await self._read_config()
            except ConfigError as exc:
                error = str(exc)
                log.error(
                    f"config rejected, the running one stays: {exc}",
                    extra={"event": "config.rejected", "source": source, "error": error},
                )
                replaced: set[str] = set()
            else:
                pinned = diff(self.started_with, new).restart_needed()
                in_force = pin(new, self.started_with, pinned)
                plan = diff(self.config, in_force)
                changes = plan.summary()
                self.restart_needed = [c.describe() for c in pinned]
                replaced = await self._apply(in_force, plan)
                restart = list(self.restart_needed)
                log.info(
                    f"config reloaded ({source}): {'; '.join(changes) or 'no change'}",
                    extra={
                        "event": "config.reloaded",
                        "source": source,
                        "changes": changes,
                        "restart_needed": restart,
                        "duration_ms": round((time.monotonic() - began) * 1000, 1),
                    },
                )
            if reset:
                names = [p.name for p in self.plugins(None, Resettable) if p.name not in replaced]
                if names:
                    await self._reset(names)
        finally:
            self._reload_results["rejected" if error is not None else "applied"] += 1
            self.last_reload = ReloadOutcome(
                generation=self._reloads,
                applied=error is None,
                source=source,
                changes=changes,
                restart_needed=restart,
                error=error,
                at=time.time(),
                duration_ms=round((time.monotonic() - began) * 1000, 1),
            )
            if self.state is DaemonState.RELOADING:
                self.state = DaemonState.RUNNING
            if self._watcher is not None:
                self._watcher.rearm()  # a swapped symlink points somewhere else now
            self.notifier.ready(self.status_line())
        return asdict(self.last_reload)

    async def _read_config(self) -> Config:
        """Load the config in a thread of its own: reading files must not block the loop, and
        a read that hangs (a dead mount, a FIFO) must neither hang the reload nor rrd's exit,
        as a thread of asyncio's default executor would."""
        assert self.load_config is not None
        load = self.load_config
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[Config] = loop.create_future()
        watcher = self._watcher

        def settle(outcome: Any, read_as: bytes | None) -> None:
            if loaded.done():
                return
            if watcher is not None:
                watcher.loaded(read_as)
            if isinstance(outcome, BaseException):
                loaded.set_exception(outcome)
            else:
                loaded.set_result(outcome)

        def read() -> None:
            # The files' contents before and after: the same, and the watcher knows what this
            # reload read; else a save raced it, and the watcher reports a change again.
            before = watcher.digest() if watcher is not None else None
            try:
                outcome: Any = load()
            except BaseException as exc:  # handed to the loop, raised there
                outcome = exc
            after = watcher.digest() if watcher is not None else None
            read_as = before if before == after else None
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(settle, outcome, read_as)

        threading.Thread(target=read, name="rrd-config-read", daemon=True).start()
        try:
            async with asyncio.timeout(CONFIG_READ_TIMEOUT):
                return await loaded
        except TimeoutError:
            raise ConfigError(
                f"reading the config took over {CONFIG_READ_TIMEOUT:g}s",
                path=str(self.config.source),
            ) from None

    async def _apply(self, new: Config, plan: ReloadPlan) -> set[str]:
        """Do what the plan says; the names of the plugins whose workers were replaced (or
        started anew). `new` is pinned already: nothing in the plan needs a restart."""
        if self.restart_needed:
            log.warning(
                "these changes need a restart of rrd: " + "; ".join(self.restart_needed),
                extra={"event": "config.restart_needed", "changes": self.restart_needed},
            )
        if new.logs.level != self.config.logs.level:
            rrd_logging.set_level(new.logs.level)
        self.config, self.config_loaded_at = new, time.time()
        if plan.for_section("status") or plan.for_section("metrics"):
            await self._serve_endpoints(new, at_start=False)
        ctx = PluginContext(new, Server(new, self.registry), self.clock, crashed=self.crashed)
        for name in plan.plugins_to_stop():
            await self._stop_plugin(name)
        replaced = plan.pools_to_replace()
        for plugin in self.started:
            if isinstance(plugin, Reconfigurable):
                await plugin.reconfigure(ctx, plan)
            elif plan.for_section(plugin.name):
                self.restart_needed.append(f"{plugin.name}: the plugin cannot reload")
        for name in plan.plugins_to_start():
            if await self._start_plugin(name, ctx):
                replaced.add(name)
        return replaced

    async def _stop_plugin(self, name: str) -> None:
        """A plugin whose section was removed: stopped as at rrd's stop, the others go on."""
        plugin = next((p for p in self.started if p.name == name), None)
        if plugin is None:
            return
        log.info(
            f"the {name} section is gone: stopping the {name} plugin",
            extra={"event": "plugin.stopping", "plugin": name},
        )
        await plugin.stop()  # cancelled by a STOP, it stays started: the stop finishes it
        self.started.remove(plugin)

    async def _start_plugin(self, name: str, ctx: PluginContext) -> bool:
        """A plugin whose section was added: started as at boot. One that cannot start (its
        workers fail) is stopped again and its section left out of the config in force, so
        that the next reload tries again; rrd and the other plugins go on."""
        cls = self.plugin_classes.get(name)
        if cls is None:
            return False
        plugin = cls()
        try:
            plugin.init(ctx)
        except Disabled:
            return False
        self.started.append(plugin)
        self.started.sort(key=lambda p: p.weight, reverse=True)
        log.info(
            f"the {name} section is new: starting the {name} plugin",
            extra={"event": "plugin.starting", "plugin": name},
        )
        try:
            await plugin.serve()
        except RrdError as exc:
            log.error(
                f"the {name} plugin could not start: {exc}",
                extra={"event": "plugin.start_failed", "plugin": name, "error": str(exc)},
            )
            self.restart_needed.append(f"{name}: could not start: {exc}")
            await self._stop_plugin(name)
            sections = {k: v for k, v in self.config.sections.items() if k != name}
            self.config = dataclasses.replace(self.config, sections=sections)
            return False
        return True

    async def _scale(self, name: str, workers: int | str) -> dict[str, Any]:
        (plugin,) = self.plugins([name], Scalable)
        assert isinstance(plugin, Scalable) and isinstance(plugin, Reporter)
        size = int(plugin.status()["pool"]["size"])
        target = scale_target(workers, size)
        try:
            plugin.scale(target)  # the pool bounds it: 1 to its max_workers
        except ValueError as exc:
            raise RpcError(f"{exc}; it has {size}") from None
        return {"plugin": name, "workers": target, "was": size}

    def plugins(self, names: list[str] | None, kind: type) -> list[Plugin]:
        """The started plugins with a capability, all of them or those named (RpcError for a
        name that is not one)."""
        capable = [p for p in self.started if isinstance(p, kind)]
        if not names:
            return capable
        known = {p.name: p for p in capable}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise RpcError(f"no such plugin: {', '.join(unknown)}; known: {', '.join(known)}")
        return [known[n] for n in names]

    async def _serve_endpoints(self, config: Config, *, at_start: bool) -> None:
        """The `status` and `metrics` sections' HTTP listeners, started, moved or closed as
        the config says. Neither section: nothing of rrd.http is even imported."""
        if config.status is None and config.metrics is None and self._endpoints is None:
            return
        if self._endpoints is None:
            from rrd.http.endpoints import Endpoints

            self._endpoints = Endpoints(self.api)
        try:
            await self._endpoints.apply(config.status, config.metrics, at_start=at_start)
        except RrdError as exc:  # only at start: a reload logs it and goes on
            raise config.error(getattr(exc, "key", "status"), str(exc)) from None

    # Stop

    async def _stop(self) -> None:
        """Stop the started plugins in reverse order, one after another; a second stop signal
        kills every worker and gives the rest STOP_NOW_GRACE."""
        self.state = DaemonState.STOPPING
        log.info("stopping", extra={"event": "daemon.stopping"})
        self.notifier.stopping(self.status_line())
        stopping = asyncio.create_task(self._stop_plugins(), name="stop")
        stopped_now = asyncio.create_task(self._stopped_now.wait())
        extending = self._every(EXTEND_BY / 3, lambda: self.notifier.extend_timeout(EXTEND_BY))
        await asyncio.wait({stopping, stopped_now}, return_when=asyncio.FIRST_COMPLETED)
        stopped_now.cancel()
        if not stopping.done():
            await asyncio.wait({stopping}, timeout=STOP_NOW_GRACE)
            stopping.cancel()
            await asyncio.gather(stopping, return_exceptions=True)
        extending.cancel()
        await self._end_orphans()
        self.state = DaemonState.STOPPED
        log.info("stopped", extra={"event": "daemon.stopped", "exit_code": self.exit_code})

    async def _stop_plugins(self) -> None:
        """Last started, first stopped; each stays listed (for /health) until it is down."""
        while self.started:
            plugin = self.started[-1]
            try:
                await plugin.stop()
            except Exception:
                log.exception(
                    f"plugin {plugin.name} failed to stop cleanly",
                    extra={"event": "plugin.stop_failed", "plugin": plugin.name},
                )
            finally:
                self.started.remove(plugin)

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

    # Status

    def status(self) -> dict[str, Any]:
        """Everything `rrd status` shows, JSON-ready."""
        return {
            "pid": os.getpid(),
            "version": __version__,
            "state": self.state.value,
            "config": str(self.config.source),
            "config_loaded_at": self.config_loaded_at,
            "restart_needed": self.restart_needed,
            "last_reload": asdict(self.last_reload) if self.last_reload else None,
            "reloads": self._reloads,
            "reload_results": dict(self._reload_results),
            "http": dict(self._endpoints.served) if self._endpoints else {},
            "plugins": {p.name: p.status() for p in self.started if isinstance(p, Reporter)},
        }

    def status_line(self) -> str:
        """One line for STATUS=: each pool's workers and ticks, and the last error."""
        parts, errors = [], []
        for plugin in self.started:
            if not isinstance(plugin, Reporter):
                continue
            report = plugin.status()
            pool = report.get("pool", {})
            serving = pool.get("ready", 0) + pool.get("busy", 0)
            part = f"{plugin.name}: {serving}/{pool.get('size', 0)} workers"
            if pool.get("state") not in (None, "up"):
                part += f" ({pool['state']})"
            if "ticks_summary" in report:
                part += f", {report['ticks_summary']}"
            parts.append(part)
            if pool.get("last_error"):
                errors.append(pool["last_error"])
        line = "; ".join(parts) or "no plugin serving"
        if self.last_reload is not None and not self.last_reload.applied:
            line += f"; config rejected: {self.last_reload.error}"
        elif errors:
            line += f"; last error: {errors[-1]}"
        return line

    def _ready(self) -> None:
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
        self.notifier.main_pid()
        self.notifier.ready(self.status_line())
        interval = self.notifier.watchdog_interval
        if interval:
            self._every(interval, self.notifier.watchdog)
        if self.notifier.enabled:
            self._every(STATUS_EVERY, self._refresh_status)

    def _refresh_status(self) -> None:
        line = self.status_line()
        if line != self._status_sent:
            self._status_sent = line
            self.notifier.status(line)

    def _every(self, seconds: float, action: Callable[[], None]) -> asyncio.Task[None]:
        """Run `action` every `seconds` on this loop: if the loop is stuck, it is not run."""

        async def repeat() -> None:
            while True:
                await asyncio.sleep(seconds)
                action()

        task = asyncio.create_task(repeat())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # Files and signals

    def _watch_config(self) -> ConfigWatcher | None:
        if not self.watch_files or self.load_config is None:
            return None
        # Imported here: watchdog's observer brings ctypes, shutil, bz2 and lzma (~1 MiB), which
        # `serve --no-watch` does not need.
        from rrd.watch import ConfigWatcher

        loop = asyncio.get_running_loop()
        watcher = ConfigWatcher(self.watch_files, self._config_changed, loop=loop)
        watcher.start()
        self._watcher = watcher
        return watcher

    def _config_changed(self) -> None:
        log.info(
            f"{self.config.source} changed",
            extra={"event": "config.changed", "config": str(self.config.source)},
        )
        self.request(Request(Command.RELOAD, {"reset": False, "source": "file"}))

    def _on_signal(self, signum: signal.Signals) -> None:
        request = SIGNAL_COMMANDS.get(signum)
        if request is not None:
            log.info(
                f"{signum.name}: {request.command.value}",
                extra={"event": "daemon.signal", "signal": signum.name},
            )
            self.request(Request(request.command, dict(request.args)))

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

    @contextlib.contextmanager
    def _signal_handlers(self, subreaper: bool) -> Iterator[None]:
        """The loop's handlers only queue requests; signals held since start-up go first.
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


def scale_target(workers: int | str, size: int) -> int:
    """The pool size `rrd scale` asks for: N, +N or -N, in ASCII digits (a superscript or an
    Arabic-Indic digit is no number here), relative to `size` when signed."""
    if isinstance(workers, int) and not isinstance(workers, bool):
        return workers
    text = workers if isinstance(workers, str) else ""
    sign = text[:1] if text[:1] in ("+", "-") else ""
    digits = text[len(sign) :]
    if not digits or len(digits) > 9 or any(c not in "0123456789" for c in digits):
        raise RpcError(f"expected a number of workers (N, +N or -N), got {workers!r}")
    count = int(digits)
    return size + count if sign == "+" else size - count if sign == "-" else count
