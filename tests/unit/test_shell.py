"""The shell scripts pass shellcheck: the stage, the package build, and the package's own."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = [
    ".ci/run",
    "tools/make-deb.sh",
    "tools/debian-root.sh",
    "tests/systemd/run.sh",
    "debian/rrd.postinst",
    "debian/rrd.prerm",
    "debian/rrd.postrm",
    "debian/tests/serve-example",
]


def test_the_list_is_every_shell_script() -> None:
    found = {
        str(path.relative_to(REPO))
        for folder in ("tools", "tests/systemd", "debian", ".ci")
        for path in (REPO / folder).rglob("*")
        if path.is_file()
        and (
            path.suffix == ".sh"
            or path.read_bytes()[:32].startswith((b"#!/bin/sh", b"#!/usr/bin/env bash"))
        )
    }
    assert found <= set(SCRIPTS), f"add to SCRIPTS: {sorted(found - set(SCRIPTS))}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_finds_nothing(script: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; .ci/run installs it)")
    done = subprocess.run(
        ["shellcheck", "-x", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
