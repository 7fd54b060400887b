"""rrd.logging and journald (`logs.journal`): each record as a journal entry with its PRIORITY
and its fields, sent by the writer thread; `<N>` prefixed lines when journald's socket is out
of reach; JSON lines as before otherwise. journald is played by a datagram socket the test
binds, and its stream by a pipe named in JOURNAL_STREAM."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from rrd import logging as rrd_logging
from rrd.fsm import ExitReason
from rrd.proc import ProcessRegistry
from rrd.protocol.control import Payload
from rrd.worker import WorkerProcess, WorkerSpec
from tests.helpers import ROOT, eventually, wait_until, worker_argv
from tests.unit.test_logging import restored_root_logger  # noqa: F401  (autouse)


class Color(Enum):
    RED = "red"


def parse_entry(data: bytes) -> dict[str, str]:
    """One entry in journald's native format, as journald reads it."""
    fields: dict[str, str] = {}
    at = 0
    while at < len(data):
        end = data.index(b"\n", at)
        line = data[at:end]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            at = end + 1
        else:
            name, size = line, int.from_bytes(data[end + 1 : end + 9], "little")
            value = data[end + 9 : end + 9 + size]
            assert data[end + 9 + size : end + 10 + size] == b"\n"
            at = end + 10 + size
        assert name.decode() not in fields, f"{name!r} twice"
        fields[name.decode()] = value.decode()
    return fields


class FakeJournald:
    """A bound datagram socket where journald's would be: it reads entries when asked to, as
    datagrams or as memfds passed with SCM_RIGHTS."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: list[dict[str, str]] = []
        self.memfd_seals: list[int] = []
        self.sock = self.bind()

    def bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self.path)
        sock.setblocking(False)
        return sock

    def read(self) -> list[dict[str, str]]:
        """What was sent so far, without waiting."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 1)
            except BlockingIOError:
                return self.entries
            for fd in fds:
                self.memfd_seals.append(fcntl.fcntl(fd, fcntl.F_GET_SEALS))
                with os.fdopen(fd, "rb") as memfd:
                    memfd.seek(0)  # journald maps it; the offset is where the writer left it
                    data = memfd.read()
            self.entries.append(parse_entry(data))

    def until(self, predicate: Any, timeout: float = 10) -> list[dict[str, str]]:
        return wait_until(lambda: predicate(self.read()) and self.entries, timeout=timeout)

    def events(self, name: str) -> list[dict[str, str]]:
        return [e for e in self.read() if e.get("EVENT") == name]

    def restart(self) -> None:
        """journald's socket made anew at the same path."""
        self.close()
        self.sock = self.bind()

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class JournalStream:
    """A pipe standing for the stream systemd connects to the journal: JOURNAL_STREAM names it
    while rrd's logging is configured with it as stderr."""

    def __init__(self) -> None:
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.file = os.fdopen(write_fd, "w")
        status = os.fstat(write_fd)
        self.journal_stream = f"{status.st_dev}:{status.st_ino}"
        self.data = b""

    def lines(self) -> list[str]:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.read_fd, 65536):
                self.data += chunk
        return self.data.decode().splitlines()

    def close(self) -> None:
        self.file.close()
        os.close(self.read_fd)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket's path has at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rrd-j"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def journald(short_dir: Path) -> Iterator[FakeJournald]:
    server = FakeJournald(str(short_dir / "socket"))
    yield server
    server.close()


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[JournalStream]:
    pipe = JournalStream()
    monkeypatch.setenv("JOURNAL_STREAM", pipe.journal_stream)
    yield pipe
    pipe.close()


def configure_on(pipe: JournalStream, journal: str, path: str, **options: str) -> str:
    """configure() while the pipe is stderr (pytest puts its own back for each phase)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", pipe.file)
        return rrd_logging.configure(journal=journal, journal_socket=path, **options)


# -- The fields of an entry -------------------------------------------------------------------


def test_priorities_follow_syslog_from_the_logging_level() -> None:
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    assert [rrd_logging.priority(level) for level in levels] == [7, 6, 4, 3, 2]
    assert [rrd_logging.priority(level) for level in (1, 25, 35, 45, 60)] == [7, 6, 4, 3, 2]


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("worker_pid", "WORKER_PID"),
        ("plugin", "PLUGIN"),
        ("duration-ms", "DURATION_MS"),
        ("_private", "PRIVATE"),
        ("2fa", "RRD_2FA"),
        ("priority", "RRD_PRIORITY"),
        ("message_id", "RRD_MESSAGE_ID"),
        ("syslog_identifier", "RRD_SYSLOG_IDENTIFIER"),
        ("naïve", "NA_VE"),
        ("x" * 80, "X" * 64),
    ],
)
def test_field_names_are_what_journald_accepts(key: str, name: str) -> None:
    assert rrd_logging.field_name(key) == name


def test_an_entry_holds_the_message_priority_identifier_and_every_context_field() -> None:
    record = logging.LogRecord("rrd.pool", logging.WARNING, "/x/pool.py", 12, "m %s", ("a",), None)
    record.funcName = "replace"
    context = {
        "event": "worker.killed",
        "plugin": "ticker",
        "worker_pid": 4242,
        "reason": Color.RED,
        "changes": ["ticker.interval", "logs.level"],
        "limits": {"ttl": 1.5},
        "continued": True,
        "gone": None,
        "path": Path("/srv/app"),
    }
    vars(record).update(context)
    assert rrd_logging.journal_fields(record) == {
        "MESSAGE": "m a",
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "rrd",
        "LOGGER": "rrd.pool",
        "EVENT": "worker.killed",
        "CODE_FILE": "/x/pool.py",
        "CODE_LINE": "12",
        "CODE_FUNC": "replace",
        "PLUGIN": "ticker",
        "WORKER_PID": "4242",
        "REASON": "red",
        "CHANGES": '["ticker.interval", "logs.level"]',
        "LIMITS": '{"ttl": 1.5}',
        "CONTINUED": "true",
        "GONE": "null",
        "PATH": "/srv/app",
    }


def test_an_entry_without_an_event_or_a_place_has_the_default_event() -> None:
    record = rrd_logging.writer_record(logging.INFO, "log.dropped", "dropped 3", count=3)
    del record.event
    fields = rrd_logging.journal_fields(record)
    assert fields["EVENT"] == "log" and fields["COUNT"] == "3"
    assert "CODE_FILE" not in fields and "CODE_FUNC" not in fields


def test_the_native_format_frames_a_value_with_a_newline_by_its_length() -> None:
    fields = {"MESSAGE": "two\nlines", "PLUGIN": "ticker", "EMPTY": "", "UTF": "é\udcff"}
    data = rrd_logging.encode_entry(fields)
    assert data.startswith(b"MESSAGE\n" + (9).to_bytes(8, "little") + b"two\nlines\n")
    assert b"PLUGIN=ticker\n" in data and b"EMPTY=\n" in data
    assert parse_entry(data) == {**fields, "UTF": "é\\udcff"}


def test_a_stream_is_the_journal_only_when_its_device_and_inode_match(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("")
    with open(path) as file:
        status = os.fstat(file.fileno())
        assert rrd_logging.stream_is_journal(file.fileno(), f"{status.st_dev}:{status.st_ino}")
        assert not rrd_logging.stream_is_journal(
            file.fileno(), f"{status.st_dev}:{status.st_ino + 1}"
        )
        for value in (None, "", "garbage", f"{status.st_dev}", f"x:{status.st_ino}"):
            assert not rrd_logging.stream_is_journal(file.fileno(), value)
        assert not rrd_logging.stream_is_journal(None, f"{status.st_dev}:{status.st_ino}")


# -- Where the records go ------------------------------------------------------------------


def test_on_the_journals_stream_records_become_entries_and_stderr_stays_empty(
    stream: JournalStream, journald: FakeJournald
) -> None:
    assert configure_on(stream, "auto", journald.path, level="debug") == "journal-socket"
    log = logging.getLogger("rrd.pool")
    log.debug("a tick", extra={"event": "ticker.tick", "tick": 3})
    log.warning(
        "worker %d killed",
        77,
        extra={"event": "worker.killed", "plugin": "ticker", "worker_pid": 77},
    )
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("it broke", extra={"event": "bug"})
    assert rrd_logging.shutdown()
    tick, killed, bug = journald.read()
    assert (tick["PRIORITY"], tick["EVENT"], tick["TICK"], tick["MESSAGE"]) == (
        "7", "ticker.tick", "3", "a tick"
    )  # fmt: skip
    assert killed == {
        **killed,
        "MESSAGE": "worker 77 killed",
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "rrd",
        "EVENT": "worker.killed",
        "PLUGIN": "ticker",
        "WORKER_PID": "77",
        "CODE_FUNC": "test_on_the_journals_stream_records_become_entries_and_stderr_stays_empty",
    }
    assert bug["PRIORITY"] == "3"
    assert bug["MESSAGE"].startswith("it broke\nTraceback (most recent call last):")
    assert bug["MESSAGE"].endswith("RuntimeError: boom")
    assert stream.lines() == []


def test_the_journal_is_the_target_with_on_even_when_stderr_is_not_its_stream(
    stream: JournalStream, journald: FakeJournald, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    assert configure_on(stream, "on", journald.path) == "journal-socket"
    logging.getLogger("rrd.test").info("hello", extra={"event": "x.hello"})
    assert rrd_logging.shutdown()
    assert [e["MESSAGE"] for e in journald.read()] == ["hello"]
    assert stream.lines() == []


def test_auto_writes_json_lines_when_stderr_is_not_the_journals_stream(
    stream: JournalStream, journald: FakeJournald, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    assert configure_on(stream, "auto", journald.path) == "lines"
    logging.getLogger("rrd.test").warning("hello", extra={"event": "x.hello"})
    assert rrd_logging.shutdown()
    (line,) = stream.lines()
    assert json.loads(line)["msg"] == "hello"
    assert journald.read() == []


def test_off_writes_json_lines_even_on_the_journals_stream(
    stream: JournalStream, journald: FakeJournald
) -> None:
    assert configure_on(stream, "off", journald.path) == "lines"
    logging.getLogger("rrd.test").warning("hello", extra={"event": "x.hello"})
    assert rrd_logging.shutdown()
    (line,) = stream.lines()
    assert json.loads(line)["msg"] == "hello"
    assert journald.read() == []


def test_without_the_journals_socket_each_line_gets_its_priority_prefix(
    stream: JournalStream, short_dir: Path
) -> None:
    missing = str(short_dir / "no-socket")
    assert configure_on(stream, "auto", missing, level="debug") == "priority-prefix"
    log = logging.getLogger("rrd.test")
    log.debug("d", extra={"event": "x.d"})
    log.info("i", extra={"event": "x.i", "plugin": "ticker"})
    log.warning("w\nsecond line", extra={"event": "x.w"})
    log.error("e")
    log.critical("c")
    assert rrd_logging.shutdown()
    lines = stream.lines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    records = [json.loads(line[3:]) for line in lines]
    assert [r["msg"] for r in records] == ["d", "i", "w\nsecond line", "e", "c"]
    assert records[1]["plugin"] == "ticker"


def test_the_priority_prefix_goes_on_every_line_of_a_human_record(
    stream: JournalStream, short_dir: Path
) -> None:
    configure_on(stream, "on", str(short_dir / "no-socket"), mode="development")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("rrd.test").exception("it broke", extra={"event": "bug"})
    assert rrd_logging.shutdown()
    warning, *bug = stream.lines()
    assert warning.startswith("<4>") and "log.journal_unavailable" in warning
    assert len(bug) > 3 and all(line.startswith("<3>") for line in bug)
    assert "it broke" in bug[0] and bug[-1] == "<3>RuntimeError: boom"


def test_on_without_the_journal_falls_back_with_one_warning(
    stream: JournalStream, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    missing = str(short_dir / "no-socket")
    assert configure_on(stream, "on", missing) == "lines"
    logging.getLogger("rrd.test").info("hello", extra={"event": "x.hello"})
    assert rrd_logging.shutdown()
    warning, hello = (json.loads(line) for line in stream.lines())
    assert (warning["level"], warning["event"]) == ("warn", "log.journal_unavailable")
    assert warning["msg"] == (
        f"logs.journal is on, but the journal cannot be reached at {missing} (No such file or "
        "directory); writing lines to stderr instead"
    )
    assert hello["msg"] == "hello"


def test_a_file_output_never_goes_to_the_journal(
    stream: JournalStream, journald: FakeJournald, tmp_path: Path
) -> None:
    output = tmp_path / "rrd.log"
    assert rrd_logging.configure(output=str(output), journal_socket=journald.path) == "lines"
    logging.getLogger("rrd.test").info("in the file")
    assert (
        rrd_logging.configure(output=str(output), journal="on", journal_socket=journald.path)
        == "lines"
    )
    logging.getLogger("rrd.test").info("still in the file")
    assert rrd_logging.shutdown()
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["msg"] for r in records] == [
        "in the file",
        f"logs.journal is on, but logs.output is a file ({output}): the journal is not used",
        "still in the file",
    ]
    assert journald.read() == []


# -- python3-systemd ----------------------------------------------------------------------------


def test_python3_systemd_sends_when_it_is_importable_from_the_writer_thread(
    stream: JournalStream, journald: FakeJournald, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, tuple[bytes, ...]]] = []

    def sendv(*args: bytes) -> None:
        sent.append((threading.current_thread().name, args))

    package = types.ModuleType("systemd")
    package.journal = types.SimpleNamespace(sendv=sendv)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "systemd", package)
    monkeypatch.setitem(sys.modules, "systemd.journal", package.journal)  # type: ignore[attr-defined]
    assert configure_on(stream, "auto", journald.path) == "python3-systemd"
    logging.getLogger("rrd.test").warning(
        "two\nlines", extra={"event": "x.y", "plugin": "ticker", "worker_pid": 5}
    )
    assert rrd_logging.shutdown()
    ((thread, args),) = sent
    assert thread == "rrd-log-writer"
    assert args[:5] == (
        b"MESSAGE=two\nlines",
        b"PRIORITY=4",
        b"SYSLOG_IDENTIFIER=rrd",
        b"LOGGER=rrd.test",
        b"EVENT=x.y",
    )
    assert b"PLUGIN=ticker" in args and b"WORKER_PID=5" in args
    assert journald.read() == [] and stream.lines() == []


def test_systemd_journal_is_imported_only_when_the_journal_is_the_target() -> None:
    code = (
        "import sys\n"
        "from rrd import logging as L\n"
        "print(L.configure(journal='auto'), 'systemd' in sys.modules)\n"
        "L.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    assert done.stdout.split() == ["lines", "False"]


# -- The writer thread against journald -----------------------------------------------------------


def test_an_entry_too_large_for_a_datagram_goes_in_a_sealed_memfd(journald: FakeJournald) -> None:
    sender = rrd_logging.JournalSocket(journald.path)
    assert sender.sock is not None
    sender.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = "x" * 300_000
    sender.send({"MESSAGE": big, "PLUGIN": "ticker"})
    sender.send({"MESSAGE": "small"})
    sender.close()
    (large, small) = journald.until(lambda entries: len(entries) >= 2)
    assert large == {"MESSAGE": big, "PLUGIN": "ticker"} and small == {"MESSAGE": "small"}
    seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
    assert journald.memfd_seals == [seals]


def test_a_journal_that_does_not_read_costs_dropped_records_never_a_blocked_caller(
    stream: JournalStream, journald: FakeJournald
) -> None:
    configure_on(stream, "auto", journald.path)
    log = logging.getLogger("rrd.test")
    total = 5000
    began = time.monotonic()
    for n in range(total):
        log.info("burst %d", n, extra={"event": "x.burst"})
    took = time.monotonic() - began

    def accounted() -> bool:
        delivered = len(journald.events("x.burst"))
        dropped = sum(int(e["COUNT"]) for e in journald.events("log.dropped"))
        return delivered + dropped == total

    journald.until(lambda _: accounted(), timeout=20)
    drops = journald.events("log.dropped")
    assert drops and all(e["PRIORITY"] == "4" for e in drops)
    assert took < 2.0, f"{total} log calls took {took:.2f}s while journald did not read"


def test_a_journal_that_goes_away_is_said_once_then_counted_when_it_is_back(
    stream: JournalStream, journald: FakeJournald, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_on(stream, "auto", journald.path)
    log = logging.getLogger("rrd.test")
    log.info("first", extra={"event": "x.first"})
    journald.until(lambda entries: entries)
    journald.close()
    log.info("lost 1", extra={"event": "x.lost"})
    log.info("lost 2", extra={"event": "x.lost"})
    failed = wait_until(lambda: capsys.readouterr().err)
    (line,) = failed.splitlines()
    assert line.startswith("<3>")  # stderr is the journal's stream
    notice = json.loads(line[3:])
    assert notice["event"] == "log.write_failed" and notice["output"] == "journal"
    journald.restart()
    log.info("back", extra={"event": "x.back"})
    entries = journald.until(lambda entries: any(e["MESSAGE"] == "back" for e in entries))
    (resumed,) = journald.events("log.write_resumed")
    delivered = len(journald.events("x.lost"))  # the second may come after the restart
    assert (resumed["COUNT"], resumed["PRIORITY"]) == (str(2 - delivered), "4")
    assert entries[-1]["EVENT"] == "x.back"
    assert capsys.readouterr().err == ""


async def test_a_workers_stderr_lines_keep_its_pid_and_plugin(
    stream: JournalStream, journald: FakeJournald
) -> None:
    configure_on(stream, "auto", journald.path)
    spec = WorkerSpec(
        argv=worker_argv("echo"),
        env=dict(os.environ),
        plugin="ticker",
        allocate_timeout=10.0,
        kill_timeout=5.0,
    )
    worker = await WorkerProcess.start(spec, ProcessRegistry())
    try:
        worker.reserve()
        assert (await worker.exec(Payload(b"LOG:hi"), 5)).body == b"logged"
        worker.release()
        lines = await eventually(
            lambda: len(journald.events("worker.stderr")) >= 2 and journald.entries
        )
    finally:
        await worker.stop(ExitReason.DESTROY, grace=5)
    relayed = [e for e in lines if e.get("EVENT") == "worker.stderr"]
    assert {e["MESSAGE"] for e in relayed} >= {"stderr says hi", "print says hi"}
    for entry in relayed:
        assert (entry["PLUGIN"], entry["WORKER_PID"]) == ("ticker", str(worker.pid))
        assert (entry["LOGGER"], entry["PRIORITY"]) == ("rrd.worker.stderr", "6")


# -- rrd serve ------------------------------------------------------------------------------------


def serve(config: Path, runtime: Path, stderr: int, journal_stream: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "JOURNAL_STREAM": journal_stream, "RUNTIME_DIRECTORY": str(runtime)}
    return subprocess.Popen(
        [sys.executable, "-m", "rrd", "serve", "-c", str(config), "--no-watch"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=env,
        cwd=ROOT,
    )


def stopped(process: subprocess.Popen[bytes]) -> int:
    process.terminate()
    return process.wait(timeout=20)


def test_serve_reads_logs_journal_off_json_lines_on_the_journals_stream(
    tmp_path: Path, short_dir: Path
) -> None:
    config = tmp_path / "rr.yaml"
    config.write_text('version: "3"\nlogs:\n  journal: off\n')
    pipe = JournalStream()
    try:
        process = serve(config, short_dir, pipe.file.fileno(), pipe.journal_stream)
        try:
            wait_until(lambda: any("daemon.idle" in line for line in pipe.lines()), timeout=20)
        finally:
            assert stopped(process) == 0
        records = [json.loads(line) for line in pipe.lines()]
    finally:
        pipe.close()
    assert "daemon.idle" in {r["event"] for r in records}


def test_serve_reads_logs_journal_on_and_says_a_file_output_keeps_it_off(
    tmp_path: Path, short_dir: Path
) -> None:
    output = tmp_path / "rrd.log"
    config = tmp_path / "rr.yaml"
    config.write_text(f'version: "3"\nlogs:\n  journal: on\n  output: {output}\n')
    process = serve(config, short_dir, subprocess.DEVNULL, "")
    try:
        wait_until(lambda: output.exists() and "daemon.idle" in output.read_text(), timeout=20)
    finally:
        assert stopped(process) == 0
    first = json.loads(output.read_text().splitlines()[0])
    assert (first["event"], first["level"]) == ("log.journal_unavailable", "warn")
