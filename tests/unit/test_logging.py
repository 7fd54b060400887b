"""rrd.logging: every line a log call produces is one JSON object with the standard fields,
written by a thread of its own, so a blocked output never blocks the code that logs."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from rrd import logging as rrd_logging
from tests.helpers import ROOT, wait_until

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Color(Enum):
    RED = "red"


class GatedStream(io.TextIOBase):
    """An output whose write() waits until the test opens the gate: a pipe nobody reads."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.gate.wait()
        self.written.append(text)
        return len(text)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in "".join(self.written).splitlines()]


class ThreadName:
    """A context field that remembers which thread turned it into text."""

    def __init__(self) -> None:
        self.formatted_on: list[str] = []

    def __str__(self) -> str:
        self.formatted_on.append(threading.current_thread().name)
        return "seen"


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rrd-log-writer"]


@pytest.fixture(autouse=True)
def restored_root_logger() -> Iterator[None]:
    """Each test configures logging afresh; afterwards the root logger is as it was and no
    writer thread is left (a gated output is opened first: its fixture ends before this one)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    assert rrd_logging.shutdown()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    wait_until(lambda: not writer_threads(), timeout=5)


@pytest.fixture
def output(tmp_path: Path) -> Path:
    """A log file to configure rrd's logging with."""
    return tmp_path / "rrd.log"


@pytest.fixture
def gated() -> Iterator[GatedStream]:
    """An output closed until the test opens it, or a watchdog does after 10s (so that code which
    waits on it fails rather than hangs); opened at the end so the writer can end."""
    stream = GatedStream()
    watchdog = threading.Timer(10, stream.gate.set)
    watchdog.start()
    yield stream
    watchdog.cancel()
    stream.gate.set()


def configure_on(stream: GatedStream, **options: str) -> None:
    """configure(output="stderr") while `stream` is stderr (pytest puts its own back for each
    phase of a test, so a fixture cannot swap it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", stream)
        rrd_logging.configure(output="stderr", **options)


def lines(output: Path) -> list[str]:
    return output.read_text().splitlines()


def written(output: Path) -> list[dict[str, Any]]:
    """The records in `output`, once the writer has written everything queued."""
    assert rrd_logging.shutdown()
    return [json.loads(line) for line in lines(output)]


def test_every_record_is_one_json_line_with_the_standard_fields(output: Path) -> None:
    rrd_logging.configure(level="debug", output=str(output))
    log = logging.getLogger("rrd.test")
    log.debug("plain")
    log.info("worker %s started", 42, extra={"event": "worker.started", "worker_pid": 42})
    log.warning("multi\nline message", extra={"event": "x.y", "path": Path("/a"), "c": Color.RED})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("it broke", extra={"event": "bug"})
    records = written(output)
    assert len(records) == 4
    for record in records:
        assert list(record)[:5] == ["ts", "level", "logger", "event", "msg"]
        assert TS.match(record["ts"])
        assert record["logger"] == "rrd.test"
    assert records[0]["event"] == "log" and records[0]["level"] == "debug"
    assert records[1] == {**records[1], "msg": "worker 42 started", "worker_pid": 42}
    assert records[2]["level"] == "warn" and records[2]["msg"] == "multi\nline message"
    assert records[2]["path"] == "/a"
    assert records[3]["level"] == "error" and "RuntimeError: boom" in records[3]["traceback"]


def test_the_traceback_keeps_its_own_field_and_extra_fields_survive_the_queue(
    output: Path,
) -> None:
    rrd_logging.configure(output=str(output))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("rrd.test").exception(
            "tick %d failed", 7, extra={"event": "ticker.failed", "tick": 7, "plugin": "ticker"}
        )
    (record,) = written(output)
    assert record["msg"] == "tick 7 failed"
    assert record["traceback"].startswith("Traceback (most recent call last):")
    assert record["traceback"].endswith("RuntimeError: boom")
    assert (record["event"], record["tick"], record["plugin"]) == ("ticker.failed", 7, "ticker")
    assert "exc_info" not in record


def test_a_message_that_cannot_be_formatted_is_reported_through_the_queue(
    output: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rrd_logging.configure(output=str(output))
    logging.getLogger("rrd.test").info("tick %d", "seven")
    logging.getLogger("rrd.test").info("still logging")
    failed, after = written(output)
    assert failed["event"] == "log.failed" and failed["level"] == "error"
    assert failed["msg"] == "cannot format log message 'tick %d'"
    assert failed["traceback"].endswith("TypeError: %d format: a real number is required, not str")
    assert after["msg"] == "still logging"
    assert capsys.readouterr().err == ""


def test_records_are_formatted_on_the_writer_thread(output: Path) -> None:
    rrd_logging.configure(output=str(output))
    field = ThreadName()
    logging.getLogger("rrd.test").info("hello", extra={"field": field})
    (record,) = written(output)
    assert record["field"] == "seen"
    assert field.formatted_on == ["rrd-log-writer"]


def test_level_filters(output: Path) -> None:
    rrd_logging.configure(level="warn", output=str(output))
    logging.getLogger("rrd.test").info("hidden")
    logging.getLogger("rrd.test").error("shown")
    assert [record["msg"] for record in written(output)] == ["shown"]


def test_set_level_changes_the_level_of_the_running_logger(output: Path) -> None:
    rrd_logging.configure(level="info", output=str(output))
    log = logging.getLogger("rrd.test")
    log.debug("hidden")
    rrd_logging.set_level("debug")
    log.debug("shown")
    rrd_logging.set_level("error")
    log.warning("hidden again")
    assert [record["msg"] for record in written(output)] == ["shown"]


def test_development_mode_renders_the_same_records_for_humans(output: Path) -> None:
    rrd_logging.configure(mode="development", output=str(output))
    logging.getLogger("rrd.test").info("hello", extra={"event": "a.b", "worker_pid": 7})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("rrd.test").exception("it broke")
    assert rrd_logging.shutdown()
    first, second, *trace = lines(output)
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} INFO  a\.b +hello  worker_pid=7$", first)
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} ERROR log +it broke$", second)
    assert trace[0] == "Traceback (most recent call last):" and trace[-1] == "RuntimeError: boom"


def test_timestamps_are_utc_with_milliseconds() -> None:
    assert rrd_logging.timestamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert rrd_logging.timestamp(1795947466.1239) == "2026-11-29T10:17:46.123Z"


def test_a_blocked_output_drops_and_counts_records_instead_of_blocking(
    gated: GatedStream,
) -> None:
    configure_on(gated, level="debug")
    log = logging.getLogger("rrd.test")
    began = time.monotonic()
    for n in range(10_000):
        log.info("record %d", n, extra={"event": "test.record", "n": n})
    elapsed = time.monotonic() - began
    assert elapsed < 2, f"10,000 log calls took {elapsed:.1f}s against a blocked output"
    assert not gated.gate.is_set()

    gated.gate.set()
    dropped = wait_until(
        lambda: [r for r in gated.records() if r["event"] == "log.dropped"], timeout=5
    )
    assert rrd_logging.shutdown()
    records = gated.records()
    kept = [r["n"] for r in records if r["event"] == "test.record"]
    assert kept == sorted(kept) and len(set(kept)) == len(kept)
    assert len(kept) <= rrd_logging.QUEUE_SIZE + 1  # the queue, and the record being written
    (notice,) = dropped
    assert notice == {
        **notice,
        "level": "warn",
        "logger": "rrd.logging",
        "msg": f"dropped {notice['count']} log records while the log output was blocked",
        "count": 10_000 - len(kept),
    }
    assert records[-1] == notice
    assert [r for r in records if r["event"] == "log.dropped"] == [notice]


def test_relayed_output_never_crowds_out_rrds_own_records(gated: GatedStream) -> None:
    """A worker flooding stderr fills at most half the queue: rrd's own lines still fit."""
    configure_on(gated)
    for n in range(3000):
        logging.getLogger("rrd.worker.stderr").info("flood %d", n, extra={"event": "worker.stderr"})
    for n in range(100):
        logging.getLogger("rrd.daemon").info("own %d", n, extra={"event": "daemon.ready"})
    gated.gate.set()
    assert rrd_logging.shutdown()
    records = gated.records()
    assert [r["msg"] for r in records if r["event"] == "daemon.ready"] == [
        f"own {n}" for n in range(100)
    ]
    relayed = [r for r in records if r["event"] == "worker.stderr"]
    assert 0 < len(relayed) <= rrd_logging.QUEUE_SIZE // 2 + 1


def test_long_records_are_bounded_by_bytes_not_only_by_count(gated: GatedStream) -> None:
    """A worker's 16 KiB stderr lines against a blocked output: at most QUEUE_BYTES queued."""
    configure_on(gated)
    line = "x" * 16 * 1024
    for n in range(500):
        logging.getLogger("rrd.test").info(line, extra={"event": "test.long", "n": n})
    gated.gate.set()
    wait_until(lambda: [r for r in gated.records() if r["event"] == "log.dropped"], timeout=5)
    assert rrd_logging.shutdown()
    kept = [r for r in gated.records() if r["event"] == "test.long"]
    per_record = len(line) + rrd_logging.RECORD_OVERHEAD
    assert 0 < len(kept) <= rrd_logging.QUEUE_BYTES // per_record + 1
    (notice,) = [r for r in gated.records() if r["event"] == "log.dropped"]
    assert notice["count"] == 500 - len(kept)


def test_shutdown_gives_up_on_a_blocked_output_within_its_timeout(gated: GatedStream) -> None:
    configure_on(gated)
    for n in range(5_000):  # more than the queue holds
        logging.getLogger("rrd.test").info("record %d", n)
    began = time.monotonic()
    assert rrd_logging.shutdown(0.5) is False
    assert 0.4 < time.monotonic() - began < 1.5


def test_shutdown_writes_what_is_queued_and_says_so(output: Path) -> None:
    rrd_logging.configure(output=str(output))
    for n in range(500):
        logging.getLogger("rrd.test").info("record %d", n)
    began = time.monotonic()
    assert rrd_logging.shutdown(2.0) is True
    assert time.monotonic() - began < 2
    assert [json.loads(line)["msg"] for line in lines(output)] == [
        f"record {n}" for n in range(500)
    ]
    assert not writer_threads()


def test_configure_again_replaces_the_writer(tmp_path: Path) -> None:
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    rrd_logging.configure(output=str(first))
    logging.getLogger("rrd.test").info("one")
    rrd_logging.configure(output=str(second))
    logging.getLogger("rrd.test").info("two")
    assert len(writer_threads()) == 1
    assert [record["msg"] for record in written(second)] == ["two"]
    assert [json.loads(line)["msg"] for line in lines(first)] == ["one"]


def test_reopen_follows_a_file_that_logrotate_renamed(output: Path) -> None:
    rrd_logging.configure(output=str(output))
    log = logging.getLogger("rrd.test")
    log.info("before")
    wait_until(lambda: output.exists() and lines(output), timeout=5)
    rotated = output.with_name("rrd.log.1")
    output.rename(rotated)
    rrd_logging.reopen()
    log.info("after")
    assert [record["msg"] for record in written(output)] == ["after"]
    assert [json.loads(line)["msg"] for line in lines(rotated)] == ["before"]


def test_reopen_leaves_stderr_alone(gated: GatedStream) -> None:
    gated.gate.set()
    configure_on(gated)
    logging.getLogger("rrd.test").info("before")
    rrd_logging.reopen()
    logging.getLogger("rrd.test").info("after")
    assert rrd_logging.shutdown()
    assert [record["msg"] for record in gated.records()] == ["before", "after"]


EXIT_WITH_A_BLOCKED_STDERR = textwrap.dedent(
    """
    import logging, os, sys
    from rrd import logging as rrd_logging

    rrd_logging.configure(output="stderr")
    for n in range(5_000):
        logging.getLogger("rrd.test").info("record %d", n)
    print("logged", flush=True)
    logging.shutdown()  # what atexit runs
    print("shut down", flush=True)
    print(rrd_logging.shutdown(0.5), flush=True)
    os._exit(0)
    """
)


def test_interpreter_exit_does_not_wait_on_a_blocked_output() -> None:
    unread, stderr = os.pipe()
    try:
        done = subprocess.run(
            [sys.executable, "-c", EXIT_WITH_A_BLOCKED_STDERR],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            timeout=10,
        )
    finally:
        os.close(stderr)
        os.close(unread)
    assert done.stdout.decode().split() == ["logged", "shut", "down", "False"]


def test_an_output_that_fails_every_write_is_said_once_on_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """/dev/full: every write fails with ENOSPC. The writer goes on, counts, says it once."""
    rrd_logging.configure(output="/dev/full")
    for n in range(300):
        logging.getLogger("rrd.test").info("record %d", n)
    assert rrd_logging.shutdown()
    errors = capfd.readouterr().err.splitlines()
    assert len(errors) == 1, errors[:5]
    notice = json.loads(errors[0])
    assert notice == {
        **notice,
        "level": "error",
        "logger": "rrd.logging",
        "event": "log.write_failed",
        "output": "/dev/full",
        "error": "No space left on device",
        "errno": "ENOSPC",
    }
    assert notice["msg"].startswith("cannot write to the log output /dev/full: No space left")


FILL_A_FILE_THEN_MAKE_ROOM = textwrap.dedent(
    """
    import logging, os, resource, sys, time
    from rrd import logging as rrd_logging

    path = sys.argv[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))  # a small disk
    rrd_logging.configure(output=path)
    writer = rrd_logging._pipeline[1]
    for n in range(100):
        logging.getLogger("rrd.test").info("record %d", n)
    deadline = time.monotonic() + 10
    while writer._failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(path) as full:  # whole lines: the one that met the limit was cut short
        written = sum(line.endswith("}") for line in full.read().splitlines())
    os.truncate(path, 0)  # room again
    logging.getLogger("rrd.test").info("record 100")
    print(written, rrd_logging.shutdown(5.0), flush=True)
    """
)


def test_the_records_lost_while_a_file_was_full_are_counted_once_it_has_room(
    tmp_path: Path,
) -> None:
    """A file size limit stands for a full disk (writes past it fail with EFBIG)."""
    output = tmp_path / "rrd.log"
    done = subprocess.run(
        [sys.executable, "-c", FILL_A_FILE_THEN_MAKE_ROOM, str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    written, shut_down = done.stdout.split()
    assert shut_down == "True", done.stderr
    (failed,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert failed["event"] == "log.write_failed" and failed["errno"] == "EFBIG", failed
    records = [json.loads(line) for line in lines(output)]
    resumed = [r for r in records if r["event"] == "log.write_resumed"]
    assert len(resumed) == 1 and resumed[0]["level"] == "warn", records
    kept = [r for r in records if r["event"] == "log"]
    assert kept[-1]["msg"] == "record 100"
    assert 0 < int(written) < 100
    # every record was written (before the disk was full, or after) or counted as lost
    assert int(written) + resumed[0]["count"] + len(kept) == 101
    assert f"{resumed[0]['count']} log records were lost" in resumed[0]["msg"]
