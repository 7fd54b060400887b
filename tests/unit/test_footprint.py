"""The daemon stays light: it does not import what it does not use (RSS budget: 26 MiB)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rrd.plugins.entrypoints import declared_anywhere
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
