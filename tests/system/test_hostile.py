"""Hostile workers under a real `rrd serve`, each contained (a cap, a kill, its process group)
with one log line; and rrd's own log failing (a full disk, a file whose folder went away): rrd
goes on supervising and says so once.

Already proven elsewhere, so not again here: a stream of frames over max_reply_size and a 4 GiB
header against one WorkerProcess (tests/integration/test_worker.py), stderr floods with and
without newlines (tests/system/test_supervision.py), a double-forked grandchild
(test_supervision.py), one child of a worker killed with its group (integration)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rrd.errors import ExecTimeout
from rrd.fsm import ExitReason
from rrd.proc import ProcessRegistry
from rrd.protocol.control import Payload
from rrd.worker import WorkerProcess, WorkerSpec
from tests.helpers import pid_alive, wait_until, worker_argv
from tests.system.conftest import config
from tests.system.test_storms import ctl, status

NO_HEALTH = "    health:\n      interval: 0s\n"


def with_pool(text: str, block: str) -> str:
    return text.replace("    destroy_timeout: 5s\n", "    destroy_timeout: 5s\n" + block)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def one_line_each(daemon: Any, event: str) -> list[dict[str, Any]]:
    """The `event` records, checked to be one per worker: each incident is said once."""
    records = daemon.events(event)
    per_worker = Counter(r["worker_pid"] for r in records)
    assert all(n == 1 for n in per_worker.values()), per_worker
    return records


def test_a_frame_header_promising_4_gib_costs_one_line_and_no_memory(rrd: Any) -> None:
    daemon = rrd(with_pool(config("huge_header", interval="50ms"), NO_HEALTH))
    daemon.wait_event("daemon.ready")
    before = rss(daemon.process.pid)
    killed = wait_until(lambda: len(found := one_line_each(daemon, "worker.killed")) >= 3 and found)
    assert all("max_frame_size" in k["msg"] for k in killed), killed
    assert rss(daemon.process.pid) < before + 8 * 2**20  # nothing of the 4 GiB was allocated
    assert daemon.stop() == 0
    assert not daemon.events("daemon.crashed")


def test_a_worker_that_never_reads_stdin_is_killed_at_exec_timeout_and_rrd_stays_small(
    rrd: Any,
) -> None:
    """ignores_eof reads nothing after its handshake and ignores SIGTERM: every tick sent to it
    waits in its pipe until exec_timeout, then it is killed (SIGKILL after kill_timeout)."""
    text = with_pool(config("ignores_eof", interval="20ms"), NO_HEALTH)
    text = text.replace("exec_timeout: 5s", "exec_timeout: 300ms")
    text = text.replace("destroy_timeout: 5s\n", "destroy_timeout: 1s\n    kill_timeout: 200ms\n")
    daemon = rrd(text)
    daemon.wait_event("daemon.ready")
    before = rss(daemon.process.pid)
    killed = wait_until(
        lambda: len(found := one_line_each(daemon, "worker.killed")) >= 4 and found, timeout=30
    )
    assert all("300ms" in k["msg"] or "0.3s" in k["msg"] for k in killed), killed
    assert rss(daemon.process.pid) < before + 8 * 2**20
    began = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - began < 5
    (stopped,) = daemon.events("ticker.stopped")
    assert stopped["failed_by"].get("timeout", 0) >= 4, stopped
    for record in daemon.events("worker.started"):
        wait_until(lambda pid=record["worker_pid"]: not pid_alive(pid), timeout=5)


async def test_a_large_payload_to_a_worker_that_never_reads_never_blocks_the_loop() -> None:
    """32 MiB cannot fit its pipe: the write waits in the transport, the loop goes on, and at
    the exec timeout the worker is killed and what was buffered for it is let go."""
    spec = WorkerSpec(
        argv=worker_argv("ignores_eof"),
        env=dict(os.environ),
        plugin="test",
        allocate_timeout=10.0,
        kill_timeout=0.2,
    )
    worker = await WorkerProcess.start(spec, ProcessRegistry())
    lags: list[float] = []

    async def heartbeat() -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - began - 0.01)

    beating = asyncio.create_task(heartbeat())
    worker.reserve()
    began = time.monotonic()
    with pytest.raises(ExecTimeout):
        await worker.exec(Payload(b"x" * (32 << 20)), timeout=0.5)
    elapsed = time.monotonic() - began
    await worker.wait_exited()
    beating.cancel()
    assert elapsed < 2
    assert worker.reason is ExitReason.EXEC_TTL and worker.returncode == -signal.SIGKILL
    assert max(lags) < 0.25, max(lags)  # the 32 MiB write never held the loop
    stdin = worker._transport.get_pipe_transport(0) if worker._transport else None
    assert stdin is None or stdin.is_closing() or stdin.get_write_buffer_size() == 0


def children_of(daemon: Any, nth: int) -> list[int]:
    lines = [r["msg"] for r in daemon.events("worker.stderr") if r["msg"].startswith("children ")]
    return [int(pid) for pid in lines[nth].split()[1:]] if len(lines) > nth else []


def test_a_hundred_children_of_a_worker_die_with_it_when_it_is_replaced_and_at_stop(
    rrd: Any,
) -> None:
    daemon = rrd(config("forks_hundred", interval="1h"))
    first = wait_until(lambda: children_of(daemon, 0), timeout=20)
    assert len(first) == 100 and all(pid_alive(pid) for pid in first)
    daemon.signal(signal.SIGHUP)  # the worker is replaced
    second = wait_until(lambda: children_of(daemon, 1), timeout=20)
    wait_until(lambda: not any(pid_alive(pid) for pid in first), timeout=5)
    assert len(second) == 100 and all(pid_alive(pid) for pid in second)
    assert daemon.stop() == 0
    wait_until(lambda: not any(pid_alive(pid) for pid in second), timeout=5)
    assert not daemon.events("daemon.crashed")


def test_a_worker_that_closes_stdout_but_keeps_running_is_killed_with_one_line(
    rrd: Any,
) -> None:
    text = with_pool(config("closes_stdout", interval="1h"), NO_HEALTH)
    daemon = rrd(text)
    killed = wait_until(lambda: one_line_each(daemon, "worker.killed"), timeout=15)
    assert "closed its stdout but kept running" in killed[0]["msg"]
    victim = killed[0]["worker_pid"]
    wait_until(lambda: not pid_alive(victim), timeout=5)
    wait_until(lambda: len(daemon.events("worker.started")) >= 2, timeout=15)  # replaced
    assert daemon.stop() == 0
    one_line_each(daemon, "worker.killed")


# rrd's own log output failing


def workers_now(tmp_path: Path) -> set[int]:
    done = ctl(tmp_path, "workers", "--json")
    assert done.returncode == 0, done.stderr
    return {w["pid"] for w in json.loads(done.stdout)["ticker"]}


def delivered(tmp_path: Path) -> int:
    return int(status(tmp_path)["plugins"]["ticker"]["ticks"]["delivered"])


def supervising(daemon: Any, tmp_path: Path) -> None:
    """Ticks go on, and a worker killed is replaced."""
    first = delivered(tmp_path)
    wait_until(lambda: delivered(tmp_path) >= first + 5, timeout=15)
    victims = workers_now(tmp_path)
    os.kill(min(victims), signal.SIGKILL)
    wait_until(lambda: len(now := workers_now(tmp_path)) == 2 and min(victims) not in now, 15)
    after = delivered(tmp_path)
    wait_until(lambda: delivered(tmp_path) >= after + 5, timeout=15)


def stops_promptly(daemon: Any) -> None:
    began = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - began < 5


def served_logging_to(rrd: Any, tmp_path: Path, output: str) -> Any:
    """rrd with 2 echo workers (they write no file: a file size limit set on rrd is theirs too,
    when they start) at 20 ms, logging at debug to `output`."""
    text = config("echo", interval="20ms", workers=2).replace(
        "logs:\n  level: debug\n", f"logs:\n  level: debug\n  output: {output}\n"
    )
    return rrd(text, "--pidfile", str(tmp_path / "rrd.pid"))


def answering(tmp_path: Path) -> bool:
    return ctl(tmp_path, "status").returncode == 0


def test_logging_to_a_full_disk_says_so_once_and_rrd_goes_on(rrd: Any, tmp_path: Path) -> None:
    """/dev/full fails every write with ENOSPC."""
    daemon = served_logging_to(rrd, tmp_path, "/dev/full")
    wait_until(lambda: answering(tmp_path), timeout=20)
    supervising(daemon, tmp_path)
    stops_promptly(daemon)
    (failed,) = daemon.records  # stderr said it once, and nothing else
    assert failed["event"] == "log.write_failed" and failed["errno"] == "ENOSPC", failed
    assert failed["output"] == "/dev/full" and "No space left on device" in failed["msg"]


def test_a_log_file_that_fills_up_then_has_room_again_says_how_many_lines_were_lost(
    rrd: Any, tmp_path: Path
) -> None:
    """rrd's file size limit (RLIMIT_FSIZE, set on the running rrd) stands for a full disk:
    writes past it fail with EFBIG; truncating the file makes room again."""
    log = tmp_path / "rrd.log"
    daemon = served_logging_to(rrd, tmp_path, str(log))
    wait_until(lambda: log.exists() and '"daemon.ready"' in log.read_text(), timeout=15)
    hard = resource.prlimit(daemon.process.pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(daemon.process.pid, resource.RLIMIT_FSIZE, (log.stat().st_size + 4096, hard))
    (failed,) = daemon.wait_event("log.write_failed")
    assert failed["errno"] == "EFBIG" and failed["output"] == str(log), failed
    supervising(daemon, tmp_path)
    full = log.read_text()
    os.truncate(log, 0)  # room again
    resumed = wait_until(
        lambda: [r for r in read_lines(log) if r["event"] == "log.write_resumed"], timeout=15
    )
    stops_promptly(daemon)
    (notice,) = resumed
    assert notice["count"] > 10 and f"{notice['count']} log records were lost" in notice["msg"]
    assert read_lines(log)[0] == notice  # the first line once the output works again
    assert '"daemon.stopped"' in log.read_text() and '"log.write_resumed"' not in full
    assert [r["event"] for r in daemon.records] == ["log.write_failed"]  # said once


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_a_log_file_whose_folder_was_removed_cannot_be_reopened_and_rrd_goes_on(
    rrd: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    daemon = served_logging_to(rrd, tmp_path, str(folder / "rrd.log"))
    log = folder / "rrd.log"
    wait_until(lambda: log.exists() and '"daemon.ready"' in log.read_text(), timeout=15)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    daemon.signal(signal.SIGUSR1)  # logrotate's reopen: the folder is gone
    (failed,) = daemon.wait_event("log.reopen_failed")
    assert "No such file or directory" in failed["msg"] and failed["output"].endswith("rrd.log")
    supervising(daemon, tmp_path)
    stops_promptly(daemon)
    assert [r["event"] for r in daemon.records] == ["log.reopen_failed"]
