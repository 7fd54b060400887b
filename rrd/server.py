"""The `server` section: how workers are started, and a pool for any plugin that asks (NewPool).

Room: server. Imports pool, worker, config and errors; never plugins or anything above.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping

from rrd import __version__
from rrd.config import Config, PoolConfig
from rrd.errors import EX_UNAVAILABLE, ConfigError, RrdError
from rrd.pool import Pool
from rrd.worker import WorkerSpec, describe_exit, kill_group

log = logging.getLogger("rrd.server")

SUPERVISOR_ONLY_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)
"""Variables systemd meant for rrd alone (NotifyAccess=main drops a child's messages anyway)."""


class OnInitFailed(RrdError):
    """`server.on_init` failed and `exit_on_error` is set."""

    exit_code = EX_UNAVAILABLE


class Server:
    """Builds worker specs and pools from the loaded config."""

    def __init__(self, config: Config, *, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.environ = dict(os.environ if environ is None else environ)

    def base_env(self) -> dict[str, str]:
        """rrd's own environment (less systemd's private variables), then --dotenv values."""
        env = {k: v for k, v in self.environ.items() if k not in SUPERVISOR_ONLY_ENV}
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
        return WorkerSpec(
            argv=tuple(argv),
            env=self.worker_env(pool, plugin_env),
            plugin=plugin,
            cwd=str(self.config.workdir),
            allocate_timeout=pool.allocate_timeout,
            user=self.config.server.user or None,
            group=self.config.server.group or None,
        )

    async def new_pool(self, plugin: str, pool: PoolConfig, plugin_env: Mapping[str, str]) -> Pool:
        """Start a pool for `plugin` and return it once every worker is ready."""
        started = Pool(plugin, self.worker_spec(plugin, pool, plugin_env), pool)
        await started.start()
        return started

    async def run_on_init(self) -> None:
        """Run `server.on_init` once, before any pool; fail rrd only if `exit_on_error`."""
        on_init = self.config.server.on_init
        if on_init is None:
            return
        env = self.base_env()
        env.update(self.config.server.env)
        env.update(on_init.env)
        began = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *on_init.command,
                env=env,
                cwd=str(self.config.workdir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return self._on_init_failed(f"cannot start {on_init.command[0]!r}: {exc.strerror}")
        try:
            async with asyncio.timeout(on_init.exec_timeout):
                output, _ = await process.communicate()
        except TimeoutError:
            kill_group(process.pid)
            await process.wait()
            return self._on_init_failed(f"did not finish within {on_init.exec_timeout:g}s")
        finally:
            kill_group(process.pid)
        for line in output.decode("utf-8", "replace").splitlines():
            log.info(line, extra={"event": "server.on_init.output", "worker_pid": process.pid})
        if process.returncode != 0:
            return self._on_init_failed(describe_exit(process.returncode))
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
