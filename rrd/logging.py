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
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import os
import sys
import threading
import time
import traceback
from queue import Empty, Full, Queue
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

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
    """The thread that formats queued records and writes them to the log output.

    The output is no `logging.Handler`, so it is not in the list `logging.shutdown` flushes and
    closes at interpreter exit: that list holds only the QueueingHandler, whose flush and close
    never wait, and exit cannot hang on an output this thread is stuck writing to.
    """

    _sentinel: None = None  # the wake-up item

    def __init__(
        self, records: Queue[Any], dropped: Backlog, formatter: logging.Formatter, output: str
    ) -> None:
        self._thread: threading.Thread | None = None
        self.records = records
        self.dropped = dropped
        self.formatter = formatter
        self.output = output
        self.stream = open_output(output)
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
            text = self.formatter.format(record)
        except Exception:
            report_error()
            return
        try:
            if self._failure is not None:
                self.stream.write_line(self.formatter.format(self._resumed()))
                self._failure, self._lost = None, 0
            self.stream.write_line(text)
        except OSError as exc:
            self._write_failed(exc)

    def _write_failed(self, error: OSError) -> None:
        """Count the record lost; the first of a run of failures is said once, on stderr."""
        self._lost += 1
        if self._failure is not None:
            return
        self._failure = error
        reason = error.strerror or str(error)
        message = (
            f"cannot write to the log output {self.output}: {reason}; rrd goes on and counts "
            "the records it cannot write until the output works again"
        )
        notice = writer_record(
            logging.ERROR,
            "log.write_failed",
            message,
            output=self.output,
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
            output=self.output,
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


def configure(mode: str = "production", level: str = "info", output: str = "stderr") -> None:
    """Route every `rrd` record (and anything else that logs) through one queue to one writer.

    A second call stops the previous writer (within shutdown's timeout) and replaces it.
    """
    global _pipeline
    shutdown()
    records: Queue[Any] = Queue(QUEUE_SIZE)
    dropped = Backlog()
    formatter = HumanFormatter() if mode == "development" else JsonLineFormatter()
    writer = LogWriter(records, dropped, formatter, output)
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
