"""Log output: one JSON object per line for pipelines, or the same records for humans.

Room: supervisor tier (beside notify). Lower rooms log through the standard `logging`
module and name their event in `extra={"event": "worker.started", ...}`; only this module
decides how a record is written, so every line carries `ts`, `level`, `logger`, `event`, `msg`
and the record's context fields.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

DEFAULT_EVENT = "log"

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
        if record.exc_info:
            log_data["traceback"] = self.formatException(record.exc_info)


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
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def parse_level(name: str) -> int:
    """`logs.level` to a logging level; unknown names fall back to info."""
    return _LEVELS.get(name.lower(), logging.INFO)


def open_output(output: str) -> IO[str]:
    """`logs.output`: stderr, stdout, or a file path opened for appending, line-buffered."""
    if output == "stderr":
        return sys.stderr
    if output == "stdout":
        return sys.stdout
    return open(output, "a", buffering=1, encoding="utf-8")


def configure(mode: str = "production", level: str = "info", output: str = "stderr") -> None:
    """Route every `rrd` record (and anything else that logs) to one handler on the root logger."""
    handler = logging.StreamHandler(open_output(output))
    handler.setFormatter(HumanFormatter() if mode == "development" else JsonLineFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, logging.StreamHandler) and old.stream not in (sys.stderr, sys.stdout):
            old.close()
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
