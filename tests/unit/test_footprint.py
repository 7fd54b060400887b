"""The daemon stays light: it does not import what it does not use (RSS budget: 25 MiB); a
worker's start stays short: it is most of a crashed worker's recovery (budget: 50 ms)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rrd.plugins.entrypoints import declared_anywhere
from rrd.protocol.control import (
    Payload,
    parse_pid,
    payload_frame,
    pid_request,
    split_payload,
    stop_request,
)
from rrd.protocol.frame import Decoder
from tests.helpers import ROOT

HEAVY = (
    "email",
    "zipfile",
    "csv",
    "importlib.metadata",
    "dotenv",
    "tempfile",
    "bz2",
    "psutil",
    "_hashlib",  # OpenSSL's libcrypto, 2 MiB
    "watchdog",  # only when watching
    "systemd",  # python3-systemd: only when the journal is the log's target
    "zoneinfo",  # and sysconfig, 0.7 MiB: only for a schedule with a timezone or cron
    "sysconfig",
    "tempfile",  # the ticker's state writes only
    "croniter",
    "fractions",  # and decimal: config units are exact on integers, 0.5 MiB
    "decimal",
    "logging.handlers",  # and pickle: rrd's log queue handler is its own, 0.5 MiB
    "pickle",
    "difflib",  # only when a config word is wrong (click still imports it for -c)
    "h11",  # and prometheus_client: only with a `status:` or `metrics:` section
    "prometheus_client",
)


def test_serve_imports_nothing_heavy_it_does_not_use() -> None:
    code = (
        "import sys, rrd.cli, rrd.daemon; from rrd.plugins import registry; "
        "registry.installed(); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == ""


def test_a_plugin_entry_point_is_seen_without_importlib_metadata(tmp_path: Path) -> None:
    declared = tmp_path / "site"
    (declared / "demo-1.0.dist-info").mkdir(parents=True)
    (declared / "demo-1.0.dist-info" / "entry_points.txt").write_text(
        "[console_scripts]\ndemo = demo:main\n\n[rrd.plugins]\ndemo = demo:Plugin\n"
    )
    other = tmp_path / "other"
    (other / "tool-2.0.dist-info").mkdir(parents=True)
    (other / "tool-2.0.dist-info" / "entry_points.txt").write_text("[console_scripts]\nt = t:m\n")
    (other / "legacy.egg-info").mkdir()
    assert declared_anywhere([str(other), str(tmp_path / "missing"), str(declared)])
    assert not declared_anywhere([str(other), str(tmp_path / "missing")])


def test_serve_skips_openssl_unless_a_plugin_could_need_it(tmp_path: Path) -> None:
    config = tmp_path / "rr.yaml"
    config.write_text('version: "3"\n')
    code = (
        "import sys, runpy; sys.argv = ['rrd', 'serve', '-c', sys.argv[1]]; "
        "import rrd.__main__ as m; from rrd.plugins.entrypoints import skip_openssl; "
        "skip_openssl(); import asyncio; print(sys.modules.get('ssl') is None)"
    )
    plain = subprocess.run(
        [sys.executable, "-c", code, str(config)], capture_output=True, text=True, cwd=ROOT
    )
    assert plain.stdout.strip() == "True", plain.stderr
    site = tmp_path / "site" / "demo-1.0.dist-info"
    site.mkdir(parents=True)
    (site / "entry_points.txt").write_text("[rrd.plugins]\ndemo = demo:Plugin\n")
    with_plugin = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert with_plugin.stdout.strip() == "False", with_plugin.stderr


def test_allow_openssl_undoes_the_block_for_prometheus_client() -> None:
    code = (
        "import sys; from rrd.plugins import entrypoints as e; e.skip_openssl(); "
        "blocked = sys.modules.get('ssl', 0) is None\n"
        "try:\n import ssl\nexcept ImportError:\n refused = True\n"
        "else:\n refused = False\n"
        "e.allow_openssl(); e.allow_openssl(); import prometheus_client.exposition; import ssl; "
        "print(blocked, refused, ssl.OPENSSL_VERSION.startswith('OpenSSL'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.stdout.split() == ["True", "True", "True"], result.stderr


WORKER_HEAVY = ("json", "re", "typing", "dataclasses", "inspect", "socket")

WORKER_REPORTING_HEAVY = f"""
import sys
from rrd.sdk import Payload, Worker

worker = Worker.create()
for payload in worker:
    loaded = [name for name in {WORKER_HEAVY!r} if name in sys.modules]
    worker.respond(Payload(",".join(loaded).encode()))
"""


def test_a_worker_starts_and_shakes_hands_without_heavy_modules() -> None:
    """An SDK worker's start, handshake and first job stay free of json, re, typing,
    dataclasses and socket: each is milliseconds of every worker's start, and a worker's
    start is most of a crashed worker's recovery."""
    stdin = b"".join(
        frame.encode() for frame in (pid_request(1), payload_frame(Payload(b"job")), stop_request())
    )
    result = subprocess.run(
        [sys.executable, "-c", WORKER_REPORTING_HEAVY],
        input=stdin,
        capture_output=True,
        check=True,
        timeout=60,
        cwd=ROOT,
    )
    pid_frame, reply = Decoder().feed(result.stdout)
    assert parse_pid(pid_frame) > 0
    assert split_payload(reply).body == b"", split_payload(reply).body
