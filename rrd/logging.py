"""Log output: one JSON object per line for pipelines, or the same records for humans.

Room: daemon tier (beside notify). Like notify it talks to whatever runs rrd, and like notify it
must never hold up the event loop: a log call only queues the record, and a writer thread of
this module's own formats and writes it. When the reader of rrd's output stops reading, the
bounded queue fills and further records are dropped and counted, never waited for; one
`log.dropped` line says how many once the output drains. When the output fails instead (a full
disk, /dev/full, a closed pipe), rrd goes on supervising: one `log.write_failed` line on stderr
says so, the records that cannot be written are counted, and once the output works again one
`log.write_resumed` line in it says how many were lost.

Lower rooms log through the standard `logging` module and name their event in
`extra={"event": "worker.started", ...}`; only this module decides how a record is written, so
every line carries `ts`, `level`, `logger`, `event`, `msg` and the record's context fields.

Under systemd (`logs.journal: auto`, the default) the output stream may be the journal: when
JOURNAL_STREAM names the stream's device and inode, each record goes to journald as an entry of
its own (MESSAGE, PRIORITY, SYSLOG_IDENTIFIER=rrd, LOGGER, EVENT and every context field as an
upper-cased field), through python3-systemd when it is importable, else through the journal's
native socket; the same writer thread sends it. When the socket cannot be reached the lines stay
JSON, each prefixed with its `<N>` syslog priority, which journald's stream reader turns into
PRIORITY.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from queue import Empty, Full, Queue
from typing import IO, Any

from pythonjsonlogger.json import JsonEncoder, JsonFormatter

DEFAULT_EVENT = "log"

# Records waiting for the writer: a typical one costs ~600 bytes, so a full queue is well
# under 1 MiB of rrd's 26 MiB, and it absorbs a burst of a thousand lines without a drop.
# QUEUE_BYTES bounds it too when the records are long (a worker's 16 KiB stderr lines).
QUEUE_SIZE = 1024
QUEUE_BYTES = 1 << 20
RECORD_OVERHEAD = 512
RELAYED = ("rrd.worker.stderr", "rrd.server.on_init")
"""Loggers of output relayed from other programs (a worker's stderr): their records may fill
only half of the queue, so that a flooding worker never crowds out rrd's own lines."""
STANDARD_STREAMS = ("stderr", "stdout")
JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "rrd"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is context.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "event"}
)
_LEVEL_NAMES = {"warning": "warn", "critical": "fatal"}
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
}
_TRACEBACKS = logging.Formatter()


def timestamp(created: float) -> str:
    """RFC 3339 in UTC with milliseconds, as log pipelines parse it: 2026-11-29T10:06:24.123Z."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def level_name(record: logging.LogRecord) -> str:
    name = record.levelname.lower()
    return _LEVEL_NAMES.get(name, name)


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record was given through `extra=`."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


def traceback_text(record: logging.LogRecord) -> str | None:
    """The record's traceback: formatted now, or as the logging thread formatted it."""
    if record.exc_info:
        return _TRACEBACKS.formatException(record.exc_info)
    return record.exc_text


class JsonLineFormatter(JsonFormatter):
    """Writes `ts`, `level`, `logger`, `event`, `msg`, then the context fields."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["ts"] = timestamp(record.created)
        log_data["level"] = level_name(record)
        log_data["logger"] = record.name
        log_data["event"] = getattr(record, "event", DEFAULT_EVENT)
        log_data["msg"] = record.getMessage()
        log_data.update(context_fields(record))
        if trace := traceback_text(record):
            log_data["traceback"] = trace


class HumanFormatter(logging.Formatter):
    """`logs.mode: development`: the same records, aligned for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{k}={v}" for k, v in context_fields(record).items())
        line = (
            f"{clock}.{int(record.msecs):03d} {level_name(record).upper():5} "
            f"{getattr(record, 'event', DEFAULT_EVENT):18} {record.getMessage()}"
        )
        if fields:
            line += f"  {fields}"
        if trace := traceback_text(record):
            line += "\n" + trace
        return line


def parse_level(name: str) -> int:
    """`logs.level` to a logging level; unknown names fall back to info."""
    return _LEVELS.get(name.lower(), logging.INFO)


class LogOutput:
    """`logs.output`: stderr, stdout, or a file path opened for appending.

    Each line goes out in os.write calls of its own, with no buffer in between: a write that
    fails (ENOSPC) leaves nothing buffered to come out later, twice or out of order (a disk
    that fills in the middle of a line still cuts that one short). A standard stream without a
    file descriptor (a test's stand-in) is written through its own methods.
    """

    def __init__(self, output: str) -> None:
        self.output = output
        self.stream: IO[str] | None = None
        self.fd: int | None = None
        if output in STANDARD_STREAMS:
            self.stream = sys.stderr if output == "stderr" else sys.stdout
            try:
                self.fd = self.stream.fileno()
            except (OSError, ValueError, AttributeError):
                self.fd = None
        else:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self.fd = os.open(output, flags, 0o666)

    def write_line(self, text: str) -> None:
        """Write `text` and a newline; OSError when the output fails."""
        if self.fd is None:
            assert self.stream is not None
            self.stream.write(text + "\n")
            self.stream.flush()
            return
        if self.stream is not None:
            # whatever others printed to the stream goes first; a failure of theirs is not ours
            with contextlib.suppress(OSError, ValueError):
                self.stream.flush()
        data = memoryview((text + "\n").encode("utf-8", "backslashreplace"))
        while data:
            written = os.write(self.fd, data)
            if written <= 0:
                raise OSError(errno.EIO, "the log output took no bytes")
            data = data[written:]

    def close(self) -> None:
        """Close a file output; a standard stream is left open."""
        if self.stream is None and self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def open_output(output: str) -> LogOutput:
    """`logs.output` opened for writing lines; OSError when a file cannot be opened."""
    return LogOutput(output)


# -- The journal ---------------------------------------------------------------------------

_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_NOT_IN_FIELD_NAMES = re.compile(r"[^A-Z0-9_]")
FIELD_NAME_MAX = 64
JOURNAL_FIELDS = frozenset(
    {
        "MESSAGE",
        "MESSAGE_ID",
        "PRIORITY",
        "SYSLOG_IDENTIFIER",
        "SYSLOG_FACILITY",
        "SYSLOG_PID",
        "SYSLOG_TIMESTAMP",
        "SYSLOG_RAW",
        "LOGGER",
        "EVENT",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
        "ERRNO",
        "TID",
        "UNIT",
        "USER_UNIT",
        "INVOCATION_ID",
        "USER_INVOCATION_ID",
        "OBJECT_PID",
        "DOCUMENTATION",
    }
)
"""Field names this module writes or journald gives a meaning to: a context field that would
take one of them is written as RRD_<NAME> instead (a `priority=` never makes a second PRIORITY)."""
_FIELD_ENCODER = JsonEncoder(ensure_ascii=False)


def priority(level: int) -> int:
    """A logging level's syslog priority: debug 7, info 6, warning 4, error 3, critical 2."""
    for least, value in _PRIORITIES:
        if level >= least:
            return value
    return 7


def field_name(key: str) -> str:
    """A context field's journal name: upper case, only [A-Z0-9_], starting with a letter."""
    name = _NOT_IN_FIELD_NAMES.sub("_", key.upper()).lstrip("_")
    if not name[:1].isalpha() or name in JOURNAL_FIELDS:
        name = "RRD_" + name
    return name[:FIELD_NAME_MAX]


def field_text(value: Any) -> str:
    """A context field's value as the JSON line holds it, as text: a string as it is, anything
    else as JSON (`true`, `12`, `["a", "b"]`), unquoted when JSON has it as a string (an enum's
    value, a path)."""
    if isinstance(value, str):
        return value
    text = _FIELD_ENCODER.encode(value)
    if text.startswith('"'):
        loaded: str = json.loads(text)
        return loaded
    return text


def journal_fields(record: logging.LogRecord) -> dict[str, str]:
    """The journal entry of a record: MESSAGE (with the traceback, as `journalctl` should show
    it), PRIORITY, SYSLOG_IDENTIFIER, LOGGER, EVENT, where it was logged (CODE_*), then every
    context field under its journal name."""
    message = record.getMessage()
    if trace := traceback_text(record):
        message += "\n" + trace
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(priority(record.levelno)),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "LOGGER": record.name,
        "EVENT": field_text(getattr(record, "event", DEFAULT_EVENT)),
    }
    if record.pathname:
        fields["CODE_FILE"] = record.pathname
        fields["CODE_LINE"] = str(record.lineno)
        if record.funcName:
            fields["CODE_FUNC"] = record.funcName
    for key, value in context_fields(record).items():
        fields[field_name(key)] = field_text(value)
    return fields


def utf8(text: str) -> bytes:
    """Text as journald takes it: UTF-8, with what cannot be encoded (a lone surrogate of an
    undecodable file name) escaped."""
    return text.encode("utf-8", "backslashreplace")


def encode_entry(fields: dict[str, str]) -> bytes:
    """Fields in journald's native format: NAME=value lines, or for a value with a newline, the
    name, a newline, the value's length as 64-bit little-endian, the value and a newline."""
    parts = []
    for name, value in fields.items():
        data = utf8(value)
        if b"\n" in data:
            parts.append(b"%s\n%s%s\n" % (name.encode(), len(data).to_bytes(8, "little"), data))
        else:
            parts.append(b"%s=%s\n" % (name.encode(), data))
    return b"".join(parts)


class JournalSocket:
    """journald's native protocol, spoken on its datagram socket: one datagram an entry, or a
    sealed memfd for an entry too large for one. Sends block (journald is behind): only the
    writer thread sends."""

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self.path = path
        self.sock: socket.socket | None = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        return sock

    def send(self, fields: dict[str, str]) -> None:
        """Send one entry; OSError when journald cannot take it."""
        entry = encode_entry(fields)
        if self.sock is None:
            self.sock = self._connect()
        try:
            self._send(self.sock, entry)
        except ConnectionError:  # journald's socket was made anew: connect to the new one
            self.close()
            self.sock = self._connect()
            self._send(self.sock, entry)

    @staticmethod
    def _send(sock: socket.socket, entry: bytes) -> None:
        try:
            sock.send(entry)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            JournalSocket._send_memfd(sock, entry)

    @staticmethod
    def _send_memfd(sock: socket.socket, entry: bytes) -> None:
        fd = os.memfd_create("rrd-journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            data = memoryview(entry)
            while data:
                data = data[os.write(fd, data) :]
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            socket.send_fds(sock, [], [fd])
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class SystemdJournal:
    """python3-systemd's `journal.sendv` (libsystemd's own client), when it is importable."""

    def __init__(self, sendv: Callable[..., Any]) -> None:
        self.sendv = sendv

    def send(self, fields: dict[str, str]) -> None:
        """Send one entry; OSError when journald cannot take it."""
        self.sendv(*(name.encode() + b"=" + utf8(value) for name, value in fields.items()))

    def close(self) -> None:
        pass


JournalSender = JournalSocket | SystemdJournal


def open_journal(path: str = JOURNAL_SOCKET) -> JournalSender:
    """A sender to the journal listening at `path`, which was reached; OSError when it cannot be.

    python3-systemd when it is importable (imported only here: only when the journal is the
    target), else rrd's own client of the native protocol.
    """
    probe = JournalSocket(path)
    try:
        from systemd import journal  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return probe
    probe.close()
    return SystemdJournal(journal.sendv)


def stream_is_journal(fd: int | None, journal_stream: str | None) -> bool:
    """Is `fd` the stream systemd connected to the journal? JOURNAL_STREAM holds its device and
    inode as `DEV:INODE` (systemd.exec(5)); a stream rrd's caller redirected elsewhere differs."""
    if fd is None or not journal_stream:
        return False
    device, _, inode = journal_stream.partition(":")
    try:
        status = os.fstat(fd)
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


class PriorityPrefixed(logging.Formatter):
    """Another formatter's text with each line prefixed by `<N>`, its syslog priority: journald's
    stream reader takes the prefix off and sets PRIORITY from it (sd-daemon(3))."""

    def __init__(self, lines: logging.Formatter) -> None:
        super().__init__()
        self.lines = lines

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.lines.format(record).split("\n"))


def journal_target(
    setting: str, stream: LogOutput, path: str = JOURNAL_SOCKET
) -> tuple[JournalSender | None, bool, str | None]:
    """`logs.journal` against where rrd runs: the journal sender to use (or None: write lines),
    whether the output stream is the journal (then lines get `<N>` prefixes), and the warning
    to log when `on` cannot be honoured."""
    if setting == "off":
        return None, False, None
    if stream.stream is None:
        if setting == "auto":
            return None, False, None
        unused = f"logs.journal is on, but logs.output is a file ({stream.output}): the journal"
        return None, False, unused + " is not used"
    on_journal = stream_is_journal(stream.fd, os.environ.get("JOURNAL_STREAM"))
    if setting == "auto" and not on_journal:
        return None, False, None
    try:
        return open_journal(path), on_journal, None
    except OSError as exc:
        if setting == "auto":
            return None, on_journal, None
        how = "with <N> priority prefixes " if on_journal else ""
        return (
            None,
            on_journal,
            f"logs.journal is on, but the journal cannot be reached at {path} "
            f"({exc.strerror or exc}); writing lines to {stream.output} {how}instead",
        )


def tell_stderr(text: str) -> None:
    """A line about the log output itself, on stderr: the one place left to say it."""
    with contextlib.suppress(Exception):
        stream = sys.stderr
        try:
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):
            stream.write(text + "\n")
            stream.flush()
            return
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
        os.write(fd, (text + "\n").encode("utf-8", "backslashreplace"))


def writer_record(level: int, event: str, message: str, **fields: Any) -> logging.LogRecord:
    """A record of this module's own (drops, a failed reopen, a bad log call), as `rrd.logging`."""
    return logging.makeLogRecord(
        {
            "name": __name__,
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": message,
            "event": event,
            **fields,
        }
    )


class Backlog:
    """What the queue holds, in bytes, and the records it had no room for: counted by logging
    threads, taken by the writer."""

    def __init__(self) -> None:
        # re-entrant: a signal handler may log while its thread is inside admit()
        self._lock = threading.RLock()
        self._bytes = 0
        self._records = 0
        self._dropped = 0

    def admit(self, size: int, *, share: float = 1.0) -> bool:
        """Room for one more record of `size` bytes within `share` of the queue? If not, the
        record is counted as dropped."""
        with self._lock:
            if self._bytes + size > QUEUE_BYTES * share or self._records + 1 > QUEUE_SIZE * share:
                self._dropped += 1
                return False
            self._bytes += size
            self._records += 1
            return True

    def release(self, size: int) -> None:
        """The writer took a record of `size` bytes off the queue."""
        with self._lock:
            self._bytes -= size
            self._records -= 1

    def add(self) -> None:
        """One more record dropped."""
        with self._lock:
            self._dropped += 1

    def take(self) -> int:
        """The records dropped since the last take."""
        with self._lock:
            count, self._dropped = self._dropped, 0
        return count


def record_size(record: logging.LogRecord) -> int:
    """What a queued record costs, roughly: its message and traceback, and the rest."""
    return len(record.msg) + len(record.exc_text or "") + RECORD_OVERHEAD


class QueueingHandler(logging.Handler):
    """The root logger's handler: hands a record to the writer thread and never waits.

    logging.handlers' QueueHandler would do, but its module costs the daemon 0.5 MiB (pickle
    and the network handlers), for the three lines of `emit`."""

    def __init__(self, records: Queue[Any], dropped: Backlog) -> None:
        super().__init__()
        self.records = records
        self.dropped = dropped

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.enqueue(self.prepare(record))
        except Exception:
            self.handleError(record)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """A copy the writer can format later: `msg` merged with its args, the traceback as text.

        The base class would format the whole record here, on the logging thread, and fold the
        traceback into `msg`; the JSON line keeps it in its own `traceback` field.
        """
        prepared = copy.copy(record)
        prepared.msg = prepared.message = record.getMessage()
        prepared.args = None
        prepared.exc_text = traceback_text(record)
        prepared.exc_info = None
        return prepared

    def enqueue(self, record: logging.LogRecord) -> None:
        """Queue the record, or drop and count it when the writer is that far behind."""
        size = record_size(record)
        share = 0.5 if record.name in RELAYED else 1.0
        if not self.dropped.admit(size, share=share):
            return
        try:
            self.records.put_nowait(record)
        except Full:
            self.dropped.release(size)
            self.dropped.add()

    def handleError(self, record: logging.LogRecord) -> None:
        """A message that cannot be formatted (a bug in a log call) is reported through the
        queue as well: the base class would write to stderr from the logging thread."""
        if logging.raiseExceptions:
            failed = writer_record(
                logging.ERROR, "log.failed", f"cannot format log message {record.msg!r}"
            )
            failed.exc_text = traceback.format_exc().rstrip("\n")
            self.enqueue(failed)


class LogWriter:
    """The thread that formats queued records and writes them to the log output, or sends them
    to the journal when `journal` is given (then `stream` only gets this module's own notices).

    The output is no `logging.Handler`, so it is not in the list `logging.shutdown` flushes and
    closes at interpreter exit: that list holds only the QueueingHandler, whose flush and close
    never wait, and exit cannot hang on an output this thread is stuck writing to.
    """

    _sentinel: None = None  # the wake-up item

    def __init__(
        self,
        records: Queue[Any],
        dropped: Backlog,
        formatter: logging.Formatter,
        stream: LogOutput,
        journal: JournalSender | None = None,
    ) -> None:
        self._thread: threading.Thread | None = None
        self.records = records
        self.dropped = dropped
        self.formatter = formatter
        self.stream = stream
        self.output = stream.output
        self.journal = journal
        self.label = "journal" if journal is not None else stream.output
        self._stopping = threading.Event()
        self._reopening = threading.Event()
        self._failure: OSError | None = None
        self._lost = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._write, name="rrd-log-writer", daemon=True)
        self._thread.start()

    def finish(self, timeout: float) -> bool:
        """Write what is queued, ending within `timeout`; False when the output is stuck."""
        self._stopping.set()
        self.enqueue_sentinel()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Stop, bounded: it never waits on a stuck output for more than 2s."""
        self.finish(2.0)

    def reopen(self) -> None:
        """Ask the thread to reopen a file output (after logrotate renamed it)."""
        self._reopening.set()
        self.enqueue_sentinel()

    def enqueue_sentinel(self) -> None:
        """Wake the thread if it waits for a record; when the queue is full it is awake anyway."""
        with contextlib.suppress(Full):
            self.records.put_nowait(self._sentinel)

    def handle(self, record: logging.LogRecord) -> None:
        """Format and write one record; a failing output costs the record, never the thread."""
        try:
            entry = self._render(record)
        except Exception:
            report_error()
            return
        try:
            if self._failure is not None:
                self._deliver(self._render(self._resumed()))
                self._failure, self._lost = None, 0
            self._deliver(entry)
        except OSError as exc:
            self._write_failed(exc)

    def _render(self, record: logging.LogRecord) -> str | dict[str, str]:
        """A line for the output, or the fields of a journal entry."""
        if self.journal is not None:
            return journal_fields(record)
        return self.formatter.format(record)

    def _deliver(self, entry: str | dict[str, str]) -> None:
        if isinstance(entry, str):
            self.stream.write_line(entry)
        elif self.journal is not None:
            self.journal.send(entry)

    def _write_failed(self, error: OSError) -> None:
        """Count the record lost; the first of a run of failures is said once, on stderr."""
        self._lost += 1
        if self._failure is not None:
            return
        self._failure = error
        reason = error.strerror or str(error)
        message = (
            f"cannot write to the log output {self.label}: {reason}; rrd goes on and counts "
            "the records it cannot write until the output works again"
        )
        notice = writer_record(
            logging.ERROR,
            "log.write_failed",
            message,
            output=self.label,
            error=reason,
            errno=errno.errorcode.get(error.errno or 0, str(error.errno)),
        )
        tell_stderr(self.formatter.format(notice))

    def _resumed(self) -> logging.LogRecord:
        reason = self._failure.strerror if self._failure is not None else None
        return writer_record(
            logging.WARNING,
            "log.write_resumed",
            f"the log output works again; {self._lost} log records were lost while it failed"
            f" ({reason})",
            output=self.label,
            count=self._lost,
        )

    def _write(self) -> None:
        while True:
            try:
                record = self.records.get_nowait()
            except Empty:
                self._caught_up()
                if self._stopping.is_set():
                    break
                record = self.records.get()
            if record is self._sentinel:
                self._reopen_if_asked()
            else:
                self.dropped.release(record_size(record))
                self.handle(record)
        self.stream.close()
        if self.journal is not None:
            self.journal.close()

    def _caught_up(self) -> None:
        """The queue is empty: say what was dropped."""
        self._reopen_if_asked()
        dropped = self.dropped.take()
        if dropped and logging.getLogger().isEnabledFor(logging.WARNING):
            self.handle(
                writer_record(
                    logging.WARNING,
                    "log.dropped",
                    f"dropped {dropped} log records while the log output was blocked",
                    count=dropped,
                )
            )

    def _reopen_if_asked(self) -> None:
        if not self._reopening.is_set():
            return
        self._reopening.clear()
        if self.output in STANDARD_STREAMS:
            return
        try:
            stream = open_output(self.output)
        except OSError as exc:
            message = f"cannot reopen {self.output}: {exc.strerror}; still writing to the old file"
            failed = writer_record(logging.ERROR, "log.reopen_failed", message, output=self.output)
            self.handle(failed)
            tell_stderr(self.formatter.format(failed))  # the old file may be gone from view
            return
        previous, self.stream = self.stream, stream
        previous.close()


def report_error() -> None:
    """What logging.Handler.handleError does, from the writer thread: a traceback on stderr."""
    if logging.raiseExceptions:
        with contextlib.suppress(Exception):
            traceback.print_exc()


_pipeline: tuple[QueueingHandler, LogWriter] | None = None


def configure(
    mode: str = "production",
    level: str = "info",
    output: str = "stderr",
    journal: str = "auto",
    *,
    journal_socket: str = JOURNAL_SOCKET,
) -> str:
    """Route every `rrd` record (and anything else that logs) through one queue to one writer.

    `journal` is `logs.journal` (auto, on, off); `journal_socket` where journald listens. Says
    where the records go: "python3-systemd" or "journal-socket" (journal entries), or
    "priority-prefix" (lines, each with its `<N>`) or "lines" (the output as it is).
    A second call stops the previous writer (within shutdown's timeout) and replaces it.
    """
    global _pipeline
    shutdown()
    records: Queue[Any] = Queue(QUEUE_SIZE)
    dropped = Backlog()
    lines: logging.Formatter = HumanFormatter() if mode == "development" else JsonLineFormatter()
    stream = open_output(output)
    sender, on_journal, warning = journal_target(journal, stream, journal_socket)
    formatter = PriorityPrefixed(lines) if on_journal else lines
    writer = LogWriter(records, dropped, formatter, stream, sender)
    handler = QueueingHandler(records, dropped)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    writer.start()
    _pipeline = handler, writer
    if warning is not None:
        logging.getLogger(__name__).warning(
            warning, extra={"event": "log.journal_unavailable", "output": output}
        )
    if isinstance(sender, SystemdJournal):
        return "python3-systemd"
    if sender is not None:
        return "journal-socket"
    return "priority-prefix" if on_journal else "lines"


def set_level(name: str) -> None:
    """Change `logs.level` while rrd runs."""
    logging.getLogger().setLevel(parse_level(name))


def reopen() -> None:
    """Reopen a file output, from the writer thread (SIGUSR1 after logrotate); else nothing."""
    if _pipeline is not None:
        _pipeline[1].reopen()


def shutdown(timeout: float = 2.0) -> bool:
    """Write what is queued, waiting at most `timeout`; False when the output is stuck.

    Then the process should end with os._exit: interpreter teardown would flush the stuck stream.
    """
    global _pipeline
    if _pipeline is None:
        return True
    handler, writer = _pipeline
    _pipeline = None
    logging.getLogger().removeHandler(handler)
    return writer.finish(timeout)
