"""rrd as root runs workers as server.user / server.group, warns when it runs them as root
unasked, and never hands an environment value to a shell."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, wait_until
from tests.system.conftest import config
from tests.system.test_control_security import nobodys_config
from tests.system.test_serve import read_ticks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory nobody can reach (pytest's own are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="rrd-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def identity(pid: int) -> dict[str, list[int]]:
    """Uid, Gid and Groups of a process, as /proc/PID/status has them."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Uid", "Gid", "Groups"):
            fields[name] = [int(v) for v in value.split()]
    return fields


def shared_log(folder: Path) -> Path:
    """A tick log that a worker running as nobody can write."""
    log = folder / "ticks.jsonl"
    log.touch(mode=0o666)
    log.chmod(0o666)
    return log


def test_workers_run_as_server_user_with_its_own_group(rrd: Any, open_dir: Path) -> None:
    log = shared_log(open_dir)
    daemon = rrd(
        nobodys_config().replace("server:\n", "server:\n  user: nobody\n"),
        env={"TICK_LOG": str(log)},
    )
    wait_until(lambda: read_ticks(log), timeout=20)
    pid = read_ticks(log)[0]["pid"]
    seen = identity(pid)
    assert seen["Uid"] == [65534] * 4
    assert seen["Gid"] == [65534] * 4  # the user's group, not root's
    assert not daemon.events("server.root_workers")
    assert daemon.stop() == 0


def test_workers_do_not_keep_rrds_supplementary_groups(tmp_path: Path, open_dir: Path) -> None:
    log = shared_log(open_dir)
    path = tmp_path / ".rr.yaml"
    path.write_text(nobodys_config().replace("server:\n", "server:\n  user: nobody\n"))
    process = subprocess.Popen(  # rrd as root with groups adm and sudo, as a login shell has
        ["setpriv", "--groups", "4,27", sys.executable, "-m", "rrd", "serve", "-c", str(path)],
        cwd=ROOT,
        env={**os.environ, "TICK_LOG": str(log)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: read_ticks(log), timeout=20)
        groups = identity(read_ticks(log)[0]["pid"])["Groups"]
        assert 4 not in groups and 27 not in groups
    finally:
        process.terminate()
        process.wait(20)


def test_root_running_workers_as_root_is_warned_once(rrd: Any, tmp_path: Path) -> None:
    log = tmp_path / "ticks.jsonl"
    daemon = rrd(config(), env={"TICK_LOG": str(log)})
    daemon.wait_event("daemon.ready")
    warned = daemon.events("server.root_workers")
    assert len(warned) == 1 and warned[0]["level"] == "warn"
    assert "server.user" in warned[0]["msg"]
    wait_until(lambda: read_ticks(log), timeout=20)
    assert identity(read_ticks(log)[0]["pid"])["Uid"][0] == 0
    daemon.signal(signal.SIGHUP)  # a reload does not warn again
    daemon.wait_event("config.reloaded")
    assert daemon.stop() == 0
    assert len(daemon.events("server.root_workers")) == 1


def test_an_environment_value_never_reaches_a_shell(rrd: Any, tmp_path: Path) -> None:
    log, planted = tmp_path / "ticks.jsonl", tmp_path / "X"
    value = f"$(touch {planted}) `touch {planted}`; touch {planted}"
    daemon = rrd(
        config(env=f"PROBE: {json.dumps(value)}"),
        env={"TICK_LOG": str(log), "RECORD_ENV": "PROBE"},
    )
    wait_until(lambda: read_ticks(log), timeout=20)
    assert read_ticks(log)[0]["env"] == {"PROBE": value}
    assert daemon.stop() == 0
    assert not planted.exists()
