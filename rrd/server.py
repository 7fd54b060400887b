"""The `server` section: how workers are started, and a pool for any plugin that asks (NewPool).

Room: server. Imports pool, worker, config and errors; never plugins or anything above.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import subprocess
import time
from collections.abc import Mapping

from rrd import __version__
from rrd.clock import Clock
from rrd.config import Config, PoolConfig
from rrd.errors import EX_UNAVAILABLE, ConfigError, RrdError
from rrd.pool import CrashHandler, Pool
from rrd.proc import ProcessRegistry, describe_exit, kill_group
from rrd.worker import WorkerSpec

log = logging.getLogger("rrd.server")
relayed = logging.getLogger("rrd.server.on_init")
"""The on_init command's output, line by line: relayed, never crowding out rrd's own lines."""

SYSTEMD_PRIVATE_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)
"""Variables systemd meant for rrd alone (NotifyAccess=main drops a child's messages anyway)."""

ON_INIT_LINE_LIMIT = 16 * 1024


def worker_group(user: str) -> str | None:
    """The group of a worker run as `user` without server.group: the user's own primary group,
    not rrd's (root's gid would go with the user's uid otherwise)."""
    if not user:
        return None
    try:
        return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except KeyError:
        return None  # validate() has said so already; the spawn says it again


def worker_groups(user: str, group: str | None) -> tuple[int, ...] | None:
    """The supplementary groups of a worker run as `user`: the user's own (as login would give
    them), never rrd's; None when workers run as rrd's user."""
    if not user:
        return None
    try:
        entry = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
        return tuple(os.getgrouplist(entry.pw_name, gid))
    except KeyError:
        return None  # validate() has said so already; the spawn says it again


def warn_root_workers(config: Config) -> None:
    """Say once, at start, that workers will run as root because nobody chose a user."""
    if os.geteuid() == 0 and not config.server.user:
        log.warning(
            "rrd runs as root and server.user is not set: workers run as root too; set "
            "server.user (and server.group) to run them as a user of their own",
            extra={"event": "server.root_workers"},
        )


class OnInitFailed(RrdError):
    """`server.on_init` failed and `exit_on_error` is set."""

    exit_code = EX_UNAVAILABLE


class Server:
    """Builds worker specs and pools from the loaded config."""

    def __init__(
        self,
        config: Config,
        registry: ProcessRegistry,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.environ = dict(os.environ if environ is None else environ)

    def base_env(self) -> dict[str, str]:
        """rrd's own environment (less systemd's private variables), then --dotenv values."""
        env = {k: v for k, v in self.environ.items() if k not in SYSTEMD_PRIVATE_ENV}
        for key, value in self.config.dotenv.items():
            env.setdefault(key, value)
        return env

    def worker_env(self, pool: PoolConfig, plugin_env: Mapping[str, str]) -> dict[str, str]:
        """Worker env in protocol.md's order: own, relay, rpc, server.env, pool, version, plugin."""
        env = self.base_env()
        env["RR_RELAY"] = "pipes"
        if self.config.rpc is not None:
            env["RR_RPC"] = self.config.rpc.listen
        env.update(self.config.server.env)
        env.update(pool.env)
        env["RR_VERSION"] = __version__
        env.update(plugin_env)
        return env

    def worker_spec(
        self, plugin: str, pool: PoolConfig, plugin_env: Mapping[str, str]
    ) -> WorkerSpec:
        """How to start one worker of `plugin`'s pool."""
        argv = pool.command or self.config.server.command
        if not argv:
            raise ConfigError(
                f"the {plugin} plugin needs a command to start its workers",
                path=str(self.config.source),
                key="server.command",
            )
        group = self.config.server.group or worker_group(self.config.server.user)
        return WorkerSpec(
            argv=tuple(argv),
            env=self.worker_env(pool, plugin_env),
            plugin=plugin,
            cwd=str(self.config.workdir),
            allocate_timeout=pool.allocate_timeout,
            kill_timeout=pool.kill_timeout,
            max_frame_size=pool.max_frame_size,
            max_reply_size=pool.max_reply_size,
            user=self.config.server.user or None,
            group=group,
            extra_groups=worker_groups(self.config.server.user, group),
        )

    def new_pool(
        self,
        plugin: str,
        pool: PoolConfig,
        plugin_env: Mapping[str, str],
        *,
        on_crash: CrashHandler | None = None,
        clock: Clock | None = None,
    ) -> Pool:
        """A pool for `plugin`, not started yet (`await pool.start()`)."""
        return Pool(
            plugin,
            self.worker_spec(plugin, pool, plugin_env),
            pool,
            registry=self.registry,
            on_crash=on_crash,
            clock=clock,
        )

    async def run_on_init(self) -> None:
        """Run `server.on_init` once, before any pool; fail rrd only if `exit_on_error`."""
        on_init = self.config.server.on_init
        if on_init is None:
            return
        env = self.base_env()
        env.update(self.config.server.env)
        env.update(on_init.env)
        began = time.monotonic()
        loop = asyncio.get_running_loop()
        output = _OnInitOutput(loop)
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: output,
                *on_init.command,
                env=env,
                cwd=str(self.config.workdir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return self._on_init_failed(f"cannot start {on_init.command[0]!r}: {exc.strerror}")
        pid = transport.get_pid()
        self.registry.add(pid)
        try:
            async with asyncio.timeout(on_init.exec_timeout):
                await output.done
        except TimeoutError:
            kill_group(pid)
            with contextlib.suppress(TimeoutError):  # a grandchild may hold the pipe open
                async with asyncio.timeout(1.0):
                    await output.done
            return self._on_init_failed(f"did not finish within {on_init.exec_timeout:g}s")
        finally:
            self.registry.reaped(pid)
            transport.close()
        returncode = transport.get_returncode()
        if returncode != 0:
            return self._on_init_failed(describe_exit(returncode))
        log.info(
            "on_init finished",
            extra={
                "event": "server.on_init.done",
                "duration_ms": round((time.monotonic() - began) * 1000, 1),
            },
        )

    def _on_init_failed(self, why: str) -> None:
        on_init = self.config.server.on_init
        assert on_init is not None
        message = f"server.on_init {' '.join(on_init.command)!r} failed: {why}"
        if on_init.exit_on_error:
            raise OnInitFailed(message)
        log.warning(message, extra={"event": "server.on_init.failed"})


class _OnInitOutput(asyncio.SubprocessProtocol):
    """Logs the on_init command's output line by line as it comes; `done` once it is over."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self._pid = 0
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._pid = transport.get_pid()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        *lines, self._tail = (self._tail + data).split(b"\n")
        if len(self._tail) > ON_INIT_LINE_LIMIT:
            lines.append(self._tail)
            self._tail = b""
        for line in lines:
            self._log(line)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._tail:
            self._log(self._tail)
        if not self.done.done():
            self.done.set_result(None)

    def _log(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        relayed.info(text, extra={"event": "server.on_init.output", "worker_pid": self._pid})
