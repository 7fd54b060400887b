"""One Worker against small real worker programs: handshake, exec, faults, stop, kill, stderr."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time

import pytest

from rrd.errors import BootError, ExecTimeout, SoftJobError, WorkerCrashed
from rrd.fsm import RetireReason, WorkerState
from rrd.protocol.control import Payload
from rrd.worker import Worker, WorkerSpec
from tests.helpers import eventually, group_alive, pid_alive, worker_argv


def spec(name: str, *args: str, allocate_timeout: float = 10.0, **env: str) -> WorkerSpec:
    return WorkerSpec(
        argv=worker_argv(name, *args),
        env={**os.environ, **env},
        plugin="test",
        allocate_timeout=allocate_timeout,
    )


async def test_handshake_then_exec_echoes_context_and_body() -> None:
    worker = await Worker.start(spec("echo"))
    try:
        assert worker.state is WorkerState.READY
        assert worker.relay_pid == worker.pid
        reply = await worker.exec(Payload(b"hello", b'{"a":1}'), timeout=5)
        assert reply == Payload(b"OK:hello", b'{"a":1}')
        assert worker.execs == 1 and worker.state is WorkerState.READY
    finally:
        await worker.stop(5, RetireReason.DESTROY)
    assert worker.state is WorkerState.STOPPED
    assert worker.returncode == 0


async def test_soft_error_keeps_the_worker_serving() -> None:
    worker = await Worker.start(spec("echo"))
    try:
        with pytest.raises(SoftJobError, match=r"^boom$") as caught:
            await worker.exec(Payload(b"ERR:boom"), timeout=5)
        assert caught.value.pid == worker.pid
        assert worker.state is WorkerState.READY
        assert (await worker.exec(Payload(b"again"), timeout=5)).body == b"OK:again"
    finally:
        await worker.stop(5, RetireReason.DESTROY)


async def test_boot_crash_is_a_boot_error_with_the_exit_code() -> None:
    with pytest.raises(BootError, match=r"worker \d+: failed its pid handshake .*exit code 3"):
        await Worker.start(spec("boot_crash"))


async def test_missing_command_is_a_boot_error() -> None:
    bad = WorkerSpec(argv=("/nonexistent/php",), env={}, plugin="test")
    with pytest.raises(BootError, match="cannot start '/nonexistent/php': No such file"):
        await Worker.start(bad)


async def test_text_before_the_handshake_is_reported_with_a_preview() -> None:
    with pytest.raises(BootError, match=r"bad frame header CRC.*Warning: some"):
        await Worker.start(spec("boot_garbage"))


async def test_php_could_not_open_input_file_is_reported_as_php_said_it() -> None:
    with pytest.raises(BootError, match=r"Could not open input file: php/does-not-exist.php$"):
        await Worker.start(spec("missing_script"))


async def test_slow_handshake_fails_after_allocate_timeout_and_is_killed() -> None:
    with pytest.raises(BootError, match=r"no pid handshake within 0.5s"):
        await Worker.start(spec("slow_boot", "30", allocate_timeout=0.5))


async def test_garbage_reply_kills_the_worker() -> None:
    worker = await Worker.start(spec("exec_garbage"))
    with pytest.raises(WorkerCrashed, match=r"bad frame header CRC.*Fatal error"):
        await worker.exec(Payload(b"x"), timeout=5)
    assert worker.state is WorkerState.ERRORED
    assert not pid_alive(worker.pid)


async def test_eof_mid_exec_is_a_crash() -> None:
    worker = await Worker.start(spec("echo"))
    with pytest.raises(WorkerCrashed, match=r"closed its relay \(exit code 3\)"):
        await worker.exec(Payload(b"CRASH"), timeout=5)
    assert await worker.wait_exited() == 3


async def test_exec_timeout_kills_the_worker() -> None:
    worker = await Worker.start(spec("echo"))
    with pytest.raises(ExecTimeout, match=r"no reply within 0.3s; killed"):
        await worker.exec(Payload(b"SLEEP:30"), timeout=0.3)
    assert worker.state is WorkerState.ERRORED
    assert await worker.wait_exited() == -9


async def test_stop_escalates_to_sigkill_and_takes_the_process_group() -> None:
    worker = await Worker.start(spec("stubborn"))
    await worker.stop(0.2, RetireReason.DESTROY)
    assert worker.returncode == -9
    await eventually(lambda: not group_alive(worker.pid), timeout=5)


async def test_stderr_is_relayed_line_by_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rrd.worker")
    worker = await Worker.start(spec("echo"))
    try:
        assert (await worker.exec(Payload(b"LOG:hi"), timeout=5)).body == b"logged"
    finally:
        await worker.stop(5, RetireReason.DESTROY)
    lines = [r for r in caplog.records if getattr(r, "event", "") == "worker.stderr"]
    messages = {r.getMessage() for r in lines}
    assert {"stderr says hi", "print says hi"} <= messages
    assert all(r.worker_pid == worker.pid and r.plugin == "test" for r in lines)


async def test_environment_reaches_the_worker() -> None:
    worker = await Worker.start(spec("echo", RR_MODE="ticker"))
    try:
        assert (await worker.exec(Payload(b"ENV:RR_MODE"), timeout=5)).body == b"ticker"
    finally:
        await worker.stop(5, RetireReason.DESTROY)


async def test_info_reports_memory_and_command() -> None:
    worker = await Worker.start(spec("echo"))
    try:
        info = worker.info()
        assert info.pid == worker.pid and info.state is WorkerState.READY
        assert info.rss > 1_000_000
        assert re.search(r"echo\.py$", info.command)
        assert sys.executable in info.command
    finally:
        await worker.stop(5, RetireReason.DESTROY)


async def test_an_escaped_grandchild_holding_stderr_does_not_hang_the_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rrd.worker")
    worker = await Worker.start(spec("escaped_child"))
    line = await eventually(
        lambda: next((r for r in caplog.records if r.getMessage().startswith("escaped")), None)
    )
    grandchild = int(line.getMessage().split()[1])
    try:
        began = time.monotonic()
        await worker.stop(5, RetireReason.DESTROY)
        assert time.monotonic() - began < 3
        assert worker.returncode == 0
    finally:
        os.kill(grandchild, signal.SIGKILL)
