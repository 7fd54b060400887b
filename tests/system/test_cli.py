"""The `rrd` command as a user runs it: exit codes, one-line errors, docs, plugins."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from rrd import __version__
from tests.helpers import ROOT
from tests.system.conftest import config


def rrd_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rrd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_version() -> None:
    result = rrd_cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.parametrize("path", ["etc/rrd/rr.yaml", "examples/php/rr.yaml"])
def test_example_configs_are_valid(path: str, tmp_path: Path) -> None:
    # `config check` looks the command's program up on PATH: this machine may have no PHP.
    php = tmp_path / "php"
    php.write_text("#!/bin/sh\nexit 0\n")
    php.chmod(0o755)
    result = rrd_cli(
        "config", "check", "-c", path, env={"PATH": f"{os.environ['PATH']}:{tmp_path}"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("rr.yaml: ok")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('version: "3"\nticker:\n  interval: 5\n', r":3: ticker.interval: .*unit"),
        ('version: "3"\ntickr:\n  interval: 1s\n', r":2: tickr: .*did you mean 'ticker'"),
        ("version: 3\n", r":1: version: .*quote"),
        ('version: "3"\nserver:\n  command: ""\n', r":3: server.command: "),
        ('version: "3"\nticker: [unclosed\n', r":\d+: "),
        ('version: "3"\nticker:\n  pool:\n    num_workers: -1\n', r":4: ticker.pool.num_workers: "),
        (
            'version: "3"\nticker:\n  exec_timeout: 0s\n',
            r":3: ticker.exec_timeout: must be positive",
        ),
    ],
)
def test_config_check_bad_files_exit_78_with_one_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text(text)
    result = rrd_cli("config", "check", "-c", str(path))
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"rrd: {path}")
    assert re.search(expected, lines[0]), lines[0]


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    result = rrd_cli("config", "check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 78 and "nope.yaml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_with_a_bad_config_exits_78_before_starting_anything(tmp_path: Path) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text('version: "3"\nticker:\n  overlap: sometimes\n')
    result = rrd_cli("serve", "-c", str(path))
    assert result.returncode == 78
    assert "ticker.overlap" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_override_and_workdir(tmp_path: Path) -> None:
    (tmp_path / ".rr.yaml").write_text(
        'version: "3"\nserver:\n  command: ./worker\nticker:\n  interval: 1s\n'
    )
    (tmp_path / "worker").write_text("#!/bin/sh\n")
    (tmp_path / "worker").chmod(0o755)  # found relative to the workdir, not to the cwd
    ok = rrd_cli("config", "check", "-w", str(tmp_path), "-o", "ticker.interval=250ms")
    assert ok.returncode == 0, ok.stderr
    bad = rrd_cli("config", "check", "-w", str(tmp_path), "-o", "ticker.interval=soon")
    assert bad.returncode == 78 and "ticker.interval" in bad.stderr


def test_usage_errors_exit_64() -> None:
    assert rrd_cli("serve", "--no-such-flag").returncode == 64
    assert rrd_cli("no-such-command").returncode == 64


def test_config_docs_lists_the_ticker_and_pool_keys() -> None:
    result = rrd_cli("config", "docs")
    assert result.returncode == 0
    keys = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    for key in (
        "ticker.interval",
        "ticker.pool.num_workers",
        "ticker.overlap",
        "server.command",
        "ticker.pool.supervisor.max_worker_memory",
    ):
        assert keys.count(key) == 1, key


DEMO_PLUGIN = """
import logging
from dataclasses import dataclass

from rrd.config import setting
from rrd.plugins.base import Disabled, Plugin

log = logging.getLogger("rrd_demo")


@dataclass(frozen=True)
class DemoConfig:
    greeting: str = setting("hello", "What the demo plugin says when it serves.")


class DemoPlugin(Plugin):
    name = "demo"
    weight = 50
    config_class = DemoConfig

    def init(self, ctx):
        self.config = ctx.section(self.name)
        if self.config is None:
            raise Disabled

    async def serve(self):
        log.info(self.config.greeting, extra={"event": "demo.served"})

    async def stop(self):
        log.info("bye", extra={"event": "demo.stopped"})
"""


@pytest.fixture
def demo_plugin(tmp_path: Path) -> dict[str, str]:
    """A third-party plugin registered under the rrd.plugins entry point, as pip would leave it."""
    site = tmp_path / "site"
    info = site / "rrd_demo-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "rrd_demo.py").write_text(textwrap.dedent(DEMO_PLUGIN))
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rrd-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rrd.plugins]\ndemo = rrd_demo:DemoPlugin\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_plugins_lists_builtins_and_third_party(
    demo_plugin: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text('version: "3"\ndemo:\n  greeting: hi\n')
    result = rrd_cli("plugins", "-c", str(path), env=demo_plugin)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "built-in" in lines["ticker"] and lines["ticker"].endswith("disabled")
    assert "rrd_demo" in lines["demo"] and lines["demo"].endswith("enabled")
    docs = rrd_cli("config", "docs", env=demo_plugin).stdout
    assert "demo.greeting" in docs


def test_a_third_party_plugin_is_served_and_stopped_in_weight_order(
    rrd: Any, demo_plugin: dict[str, str], tmp_path: Path
) -> None:
    text = config(interval="100ms", extra="demo:\n  greeting: hello from demo\n")
    daemon = rrd(text, env={**demo_plugin, "TICK_LOG": str(tmp_path / "t")})
    daemon.wait_event("ticker.tick")
    assert daemon.stop() == 0
    events = [r["event"] for r in daemon.records]
    assert daemon.events("demo.served")[0]["msg"] == "hello from demo"
    assert events.index("demo.served") < events.index("ticker.started")
    assert events.index("ticker.stopped") < events.index("demo.stopped")
    assert daemon.events("daemon.ready")[0]["plugins"] == ["demo", "ticker"]
