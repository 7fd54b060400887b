"""`rrd serve` as a child process: write a config, start it, read its JSON log, stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, group_alive, wait_until


class Daemon:
    """One `python -m rrd serve` process and the JSON lines it logged so far."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == name]

    def wait_event(self, name: str, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
        return wait_until(lambda: len(found := self.events(name)) >= count and found, timeout)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 20.0) -> int:
        """The exit code, once rrd has exited by itself and its log is read."""
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code


@pytest.fixture
def rrd(tmp_path: Path) -> Iterator[Any]:
    """Start `rrd serve` with a config written from YAML text; always stopped at test end."""
    started: list[Daemon] = []

    def start(
        config: str,
        *args: str,
        env: dict[str, str] | None = None,
        config_file: str | None = ".rr.yaml",
    ) -> Daemon:
        """`config` is written to tmp_path/`config_file` and served; with `config_file` None
        the test passes its own `-c` in `args`."""
        where: list[str] = []
        if config_file is not None:
            path = tmp_path / config_file
            path.write_text(config)
            where = ["-c", str(path)]
        process = subprocess.Popen(
            [sys.executable, "-m", "rrd", "serve", *where, *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        daemon = Daemon(process)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()
        # nothing rrd started may outlive it (the kernel's parent-death signal takes a moment)
        for record in daemon.records:
            if record.get("event") == "worker.started":
                pid = record["worker_pid"]
                wait_until(lambda pid=pid: not group_alive(pid), timeout=5)


def config(
    worker: str = "tick_recorder",
    *,
    interval: str = "100ms",
    workers: int = 1,
    extra: str = "",
    env: str = "",
) -> str:
    """A ticker config running tests/workers/WORKER.py."""
    return f"""
version: "3"
server:
  command: ["{sys.executable}", "{ROOT / "tests" / "workers" / (worker + ".py")}"]
  env: {{{env}}}
logs:
  level: debug
ticker:
  interval: {interval}
  exec_timeout: 5s
  pool:
    num_workers: {workers}
    allocate_timeout: 10s
    destroy_timeout: 5s
{extra}"""


Operator = Callable[..., "subprocess.CompletedProcess[str]"]


def operator(tmp_path: Path) -> Operator:
    """`ctl(*args)`: `rrd ARGS` at the rrd serving tmp_path/.rr.yaml with --pidfile
    tmp_path/rrd.pid, as an operator runs it."""

    def ctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        where = ["-c", str(tmp_path / ".rr.yaml"), "--pidfile", str(tmp_path / "rrd.pid")]
        return subprocess.run(
            [sys.executable, "-m", "rrd", *args, *where],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=timeout,
        )

    return ctl


@pytest.fixture
def served(rrd: Any, tmp_path: Path) -> tuple[Daemon, Operator]:
    """rrd serving 2 tick_recorder workers at 50 ms, and `ctl(*args)` to run `rrd ARGS` at it."""
    daemon = rrd(
        config(interval="50ms", workers=2),
        "--pidfile",
        str(tmp_path / "rrd.pid"),
        env={"TICK_LOG": str(tmp_path / "ticks.jsonl")},
    )
    daemon.wait_event("daemon.ready")
    return daemon, operator(tmp_path)
