"""One WorkerProcess against small real worker programs: handshake, exec, faults, stop, kill,
stderr, and the bytes a worker must not send."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from rrd.errors import BootError, ExecTimeout, SoftJobError, WorkerCrashed
from rrd.fsm import ExitReason, IllegalTransition, WorkerState
from rrd.proc import ProcessRegistry, sampled
from rrd.protocol.control import Payload
from rrd.worker import PIPE_READ_SIZE, WorkerProcess, WorkerSpec
from tests.helpers import eventually, group_alive, pid_alive, worker_argv


def spec(name: str, *args: str, **options: Any) -> WorkerSpec:
    env = {**os.environ, **options.pop("env", {})}
    settings = {"allocate_timeout": 10.0, "kill_timeout": 5.0, **options}
    return WorkerSpec(argv=worker_argv(name, *args), env=env, plugin="test", **settings)


async def start(name: str, *args: str, **options: Any) -> WorkerProcess:
    return await WorkerProcess.start(spec(name, *args, **options), ProcessRegistry())


@asynccontextmanager
async def running(name: str, *args: str, **options: Any) -> AsyncIterator[WorkerProcess]:
    worker = await start(name, *args, **options)
    try:
        yield worker
    finally:
        if worker.state is WorkerState.WORKING:
            worker.release()
        await worker.stop(ExitReason.DESTROY, grace=5)
        assert not group_alive(worker.pid)


async def exec_on(worker: WorkerProcess, body: bytes, timeout: float = 5) -> Payload:
    worker.reserve()
    try:
        return await worker.exec(Payload(body), timeout)
    finally:
        worker.release()


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == name]


async def test_handshake_then_exec_echoes_context_and_body() -> None:
    async with running("echo") as worker:
        assert worker.state is WorkerState.READY
        assert worker.relay_pid == worker.pid
        worker.reserve()
        reply = await worker.exec(Payload(b"hello", b'{"a":1}'), timeout=5)
        worker.release()
        assert reply == Payload(b"OK:hello", b'{"a":1}')
        assert worker.execs == 1 and worker.state is WorkerState.READY
    assert worker.state is WorkerState.STOPPED
    assert worker.returncode == 0


async def test_the_separator_is_written_with_the_payload_not_after_the_reply() -> None:
    """Its answer then comes back with the reply: one wake-up of rrd per job, not two."""
    async with running("separator_probe") as worker:
        for _ in range(3):
            assert (await exec_on(worker, b"x")).body == b"with"


async def test_a_workers_pipes_are_read_at_most_a_pipes_worth_at_a_time() -> None:
    """asyncio's 256 KiB reads cost ~16 us each in os.read's allocation, against ~1 us."""
    async with running("echo") as worker:
        transport = worker._transport
        assert transport is not None
        for fd in (1, 2):
            assert getattr(transport.get_pipe_transport(fd), "max_size", None) == PIPE_READ_SIZE
        assert PIPE_READ_SIZE == 64 * 1024
        assert (await exec_on(worker, b"y" * 200_000)).body == b"OK:" + b"y" * 200_000


async def test_exec_needs_a_reserved_worker() -> None:
    async with running("echo") as worker:
        with pytest.raises(IllegalTransition, match="not reserved"):
            await worker.exec(Payload(b"x"), 5)


async def test_soft_error_keeps_the_worker_serving() -> None:
    async with running("echo") as worker:
        with pytest.raises(SoftJobError, match=r"^boom$") as caught:
            await exec_on(worker, b"ERR:boom")
        assert caught.value.pid == worker.pid
        assert worker.state is WorkerState.READY
        assert (await exec_on(worker, b"again")).body == b"OK:again"


async def test_boot_crash_is_a_boot_error_with_the_exit_code_and_last_stderr_line() -> None:
    with pytest.raises(
        BootError,
        match=r"worker \d+: exited before its pid handshake \(exit code 3\); its last stderr "
        r"line: boot_crash: cannot load the application",
    ):
        await start("boot_crash")


async def test_a_missing_or_unrunnable_command_is_a_boot_error_that_says_which(
    tmp_path: Path,
) -> None:
    missing = WorkerSpec(argv=("/nonexistent/php",), env={}, plugin="test")
    with pytest.raises(BootError, match=r"^command not found: '/nonexistent/php'$"):
        await WorkerProcess.start(missing, ProcessRegistry())
    (tmp_path / "worker.sh").write_text("#!/bin/sh\n")
    unrunnable = WorkerSpec(argv=("./worker.sh",), env={}, plugin="test", cwd=str(tmp_path))
    with pytest.raises(BootError, match=r"^permission denied: './worker.sh'$"):
        await WorkerProcess.start(unrunnable, ProcessRegistry())


async def test_text_before_the_handshake_is_reported_with_a_preview() -> None:
    with pytest.raises(
        BootError,
        match=r"wrote garbage to stdout: Warning: something went wrong in bootstrap.php on "
        r"line 3\\x0a$",
    ):
        await start("boot_garbage")


@pytest.mark.parametrize("pieces", ["", "1"])
async def test_php_could_not_open_input_file_is_reported_as_php_said_it(pieces: str) -> None:
    """Whole, or in three writes 30 ms apart: the message is read to its end either way."""
    with pytest.raises(BootError, match=r"Could not open input file: php/does-not-exist.php$"):
        await start("missing_script", env={"PIECES": pieces})


async def test_slow_handshake_fails_after_allocate_timeout_and_is_killed() -> None:
    registry = ProcessRegistry()
    with pytest.raises(BootError, match=r"no pid handshake within 0.5s"):
        await WorkerProcess.start(spec("slow_boot", "30", allocate_timeout=0.5), registry)
    assert len(registry) == 0


async def test_garbage_reply_kills_the_worker() -> None:
    worker = await start("exec_garbage")
    with pytest.raises(WorkerCrashed, match=r"wrote garbage to stdout: Fatal error: this is not"):
        await exec_on(worker, b"x")
    assert worker.state is WorkerState.ERRORED and worker.reason is ExitReason.GARBAGE
    await worker.wait_exited()
    assert not pid_alive(worker.pid)


async def test_eof_mid_exec_is_a_crash() -> None:
    worker = await start("echo")
    with pytest.raises(WorkerCrashed, match=r"closed its relay \(exit code 3\)"):
        await exec_on(worker, b"CRASH")
    assert await worker.wait_exited() == 3
    assert worker.reason is ExitReason.CRASHED


async def test_exec_timeout_terminates_the_worker_sigterm_first() -> None:
    worker = await start("echo")
    with pytest.raises(ExecTimeout, match=r"no reply within 0.3s; killed"):
        await exec_on(worker, b"SLEEP:30", timeout=0.3)
    assert worker.state is WorkerState.ERRORED and worker.reason is ExitReason.EXEC_TTL
    assert await worker.wait_exited() == -signal.SIGTERM


async def test_exec_timeout_kills_a_worker_that_ignores_sigterm_after_kill_timeout() -> None:
    worker = await start("stubborn", kill_timeout=0.3)
    worker.reserve()
    began = time.monotonic()
    with pytest.raises(ExecTimeout):
        await worker.exec(Payload(b"HANG"), 0.2)
    assert await worker.wait_exited() == -signal.SIGKILL
    assert 0.45 <= time.monotonic() - began < 3


async def test_stop_escalates_to_sigterm_then_sigkill_and_takes_the_process_group(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = await start("stubborn", kill_timeout=0.2)
    await worker.stop(ExitReason.DESTROY, grace=0.2)
    assert worker.returncode == -signal.SIGKILL
    await eventually(lambda: not group_alive(worker.pid), timeout=5)
    assert [r.levelname for r in events(caplog, "worker.terminate")] == ["WARNING"]
    (killed,) = events(caplog, "worker.killed")
    assert killed.levelname == "WARNING" and "ignored SIGTERM" in killed.getMessage()


async def test_the_grace_after_the_stop_frame_is_the_one_given(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """destroy_timeout is the grace: a worker that needs 1.2 s to clean up gets it."""
    worker = await start("slow_exit", env={"CLEANUP": "1.2"})
    await worker.stop(ExitReason.DESTROY, grace=6)
    assert worker.returncode == 0 and worker.state is WorkerState.STOPPED
    assert not events(caplog, "worker.terminate") and not events(caplog, "worker.killed")


async def test_a_second_stop_waits_for_the_first_and_never_kills(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rrd.worker")
    worker = await start("slow_exit", env={"CLEANUP": "1"})
    first = worker.stop(ExitReason.MAX_JOBS, grace=10)
    await eventually(lambda: any(r.getMessage() == "cleaning up" for r in caplog.records))
    second = worker.stop(ExitReason.DESTROY, grace=0.01)
    await asyncio.gather(first, second)
    assert worker.returncode == 0
    assert worker.reason is ExitReason.MAX_JOBS
    assert not events(caplog, "worker.killed") and not events(caplog, "worker.terminate")


async def test_a_busy_worker_is_never_stopped_only_drained() -> None:
    async with running("echo") as worker:
        worker.reserve()
        with pytest.raises(IllegalTransition, match="from working to stopping"):
            worker.stop(ExitReason.RESET, grace=1)
        assert worker.drain(ExitReason.RESET)
        assert (await worker.exec(Payload(b"still"), 5)).body == b"OK:still"
        assert worker.state is WorkerState.DRAINING
    assert worker.returncode == 0 and worker.reason is ExitReason.RESET


async def test_a_second_reply_in_the_same_write_kills_the_worker_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = await start("double_reply")
    assert (await exec_on(worker, b"one")).body == b"OK:one"
    await worker.wait_exited()
    assert worker.reason is ExitReason.GARBAGE
    (killed,) = events(caplog, "worker.killed")
    assert killed.worker_pid == worker.pid and killed.levelname == "WARNING"
    assert re.search(r"sent a second reply to one payload: .*AGAIN:one", killed.getMessage())


async def test_a_late_second_reply_while_idle_kills_the_worker_before_the_next_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = await start("double_reply", env={"DOUBLE_DELAY": "0.3"})
    assert (await exec_on(worker, b"one")).body == b"OK:one"
    assert worker.state is WorkerState.READY
    await worker.wait_exited()
    assert worker.reason is ExitReason.GARBAGE
    worker_pid = worker.pid
    assert any(r.worker_pid == worker_pid for r in events(caplog, "worker.killed"))


async def test_bytes_while_idle_kill_the_worker(caplog: pytest.LogCaptureFixture) -> None:
    worker = await start("chatty", env={"CHATTY_AFTER": "0.3"})
    await worker.wait_exited()
    assert worker.reason is ExitReason.GARBAGE and worker.execs == 0
    (killed,) = events(caplog, "worker.killed")
    assert "out of turn" in killed.getMessage() and "unasked" in killed.getMessage()


async def test_a_streamed_reply_over_max_reply_size_kills_the_worker() -> None:
    worker = await start("stream_flood", max_frame_size=1 << 20, max_reply_size=4 << 20)
    assert (await exec_on(worker, b"FRAMES:1000000:4")).body == b"x" * 4_000_000
    with pytest.raises(WorkerCrashed, match=r"exceeds max_reply_size \(4194304 bytes\)"):
        await exec_on(worker, b"FRAMES:1000000:40")
    assert worker.reason is ExitReason.GARBAGE
    await worker.wait_exited()


async def test_a_frame_header_over_max_frame_size_kills_the_worker_at_once() -> None:
    worker = await start("huge_header", max_frame_size=1 << 20)
    began = time.monotonic()
    with pytest.raises(WorkerCrashed, match=r"exceeds the limit of 1048576 \(max_frame_size\)"):
        await exec_on(worker, b"x")
    assert time.monotonic() - began < 2
    await worker.wait_exited()


async def test_stderr_is_relayed_line_by_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rrd.worker")
    async with running("echo") as worker:
        assert (await exec_on(worker, b"LOG:hi")).body == b"logged"
    lines = events(caplog, "worker.stderr")
    messages = {r.getMessage() for r in lines}
    assert {"stderr says hi", "print says hi"} <= messages
    assert all(r.worker_pid == worker.pid and r.plugin == "test" for r in lines)


async def test_environment_reaches_the_worker() -> None:
    async with running("echo", env={"RR_MODE": "ticker"}) as worker:
        assert (await exec_on(worker, b"ENV:RR_MODE")).body == b"ticker"


async def test_info_reports_the_command_and_a_sample_its_memory() -> None:
    async with running("echo") as worker:
        info = worker.info()
        assert info.pid == worker.pid and info.state is WorkerState.READY
        (sample,) = (await sampled([worker.pid, 2**22 + 1])).values()  # the second is no pid
        assert sample.rss > 1_000_000 and 0 <= sample.cpu_percent <= 100
        assert re.search(r"echo\.py$", info.command)
        assert sys.executable in info.command


async def test_the_transport_is_closed_once_the_worker_is_reaped() -> None:
    async with running("echo") as worker:
        transport = worker._transport
        assert transport is not None and not transport.is_closing()
    assert transport.is_closing()
    crashed = await start("echo")
    with pytest.raises(WorkerCrashed):
        await exec_on(crashed, b"CRASH")
    await crashed.wait_exited()
    assert crashed._transport is not None and crashed._transport.is_closing()


async def test_an_escaped_grandchild_holding_stderr_does_not_hang_the_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rrd.worker")
    worker = await start("escaped_child")
    line = await eventually(
        lambda: next((r for r in caplog.records if r.getMessage().startswith("escaped")), None)
    )
    grandchild = int(line.getMessage().split()[1])
    try:
        began = time.monotonic()
        await worker.stop(ExitReason.DESTROY, grace=5)
        assert time.monotonic() - began < 3
        assert worker.returncode == 0
    finally:
        os.kill(grandchild, signal.SIGKILL)
