"""Every bench script still runs: a smoke run of each (`--smoke --json`: tiny sizes, no
figure judged), all at once so that the suite pays for the slowest only.

Benchmarks are run by hand (`make bench`); this only keeps them from rotting. It checks what
a script reports, not how fast anything was: each row is well formed, names rrd's figure with
real samples, and whatever it is compared with has samples too.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
SCRIPTS = (
    "exec",
    "ticker",
    "recovery",
    "startup",
    "footprint",
    "reload",
    "stop",
    "scaling",
    "observability",
    "schedules",
    "imports",
)
SMOKE_TIMEOUT = 240.0

sys.path.insert(0, str(BENCH))
from table import Row  # noqa: E402

_SMOKE_STARTED: dict[str, float] = {}


@pytest.fixture(scope="module")
def smoke_runs() -> dict[str, subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    _SMOKE_STARTED["at"] = time.time()
    running = {
        name: subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), "--smoke", "--json"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for name in SCRIPTS
    }
    deadline = time.monotonic() + SMOKE_TIMEOUT
    done: dict[str, subprocess.CompletedProcess[str]] = {}
    try:
        for name, process in running.items():
            try:
                out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                out, err = process.communicate()
                err += f"\n(smoke run timed out after {SMOKE_TIMEOUT:g}s)"
            done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    finally:
        for process in running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return done


@pytest.mark.timeout(SMOKE_TIMEOUT + 60)
@pytest.mark.parametrize("name", SCRIPTS)
def test_a_smoke_run_reports_well_formed_rows(
    name: str, smoke_runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    run = smoke_runs[name]
    assert run.returncode == 0, f"bench/{name}.py --smoke failed:\n{run.stderr[-3000:]}"
    rows = [Row.from_json(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert rows, f"bench/{name}.py gave no rows:\n{run.stderr[-2000:]}"
    for row in rows:
        assert row.bench and row.figure and row.rrd.unit
        for figure in (row.rrd, *row.versus.values()):
            assert figure.samples and all(math.isfinite(s) for s in figure.samples), row
        assert row.met in (True, False, None)
    assert not [line for line in run.stdout.splitlines() if line and not line.startswith("{")]


def test_no_smoke_run_leaves_a_process_behind(
    smoke_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    """Each bench stops what it started: no rrd, peer or worker born during the runs is left."""
    began = min(_SMOKE_STARTED.values())
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}

    def leftover(process: psutil.Process) -> bool:
        try:
            if process.pid in mine or process.create_time() < began - 1:
                return False
            line = " ".join(process.cmdline())
        except psutil.Error:
            return False
        return any(mark in line for mark in (str(ROOT), "supervisord", "circusd", "rrd"))

    def left() -> list[psutil.Process]:
        return [p for p in psutil.process_iter() if leftover(p)]

    with contextlib.suppress(AssertionError):  # a process killed last may be on its way out
        wait_until(lambda: not left(), timeout=10)
    assert not left(), [" ".join(p.cmdline()) for p in left()]
