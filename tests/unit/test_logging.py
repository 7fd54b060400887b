"""rrd.logging: every line a log call produces is one JSON object with the standard fields."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

import pytest

from rrd import logging as rrd_logging

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Color(Enum):
    RED = "red"


@pytest.fixture
def output(tmp_path: Path) -> Iterator[Path]:
    """A log file to configure rrd's logging with; handlers are closed afterwards."""
    yield tmp_path / "rrd.log"
    for handler in logging.getLogger().handlers:
        handler.close()
    logging.getLogger().handlers.clear()


def lines(output: Path) -> list[str]:
    return output.read_text().splitlines()


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
    records = [json.loads(line) for line in lines(output)]
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


def test_level_filters(output: Path) -> None:
    rrd_logging.configure(level="warn", output=str(output))
    logging.getLogger("rrd.test").info("hidden")
    logging.getLogger("rrd.test").error("shown")
    assert [json.loads(line)["msg"] for line in lines(output)] == ["shown"]


def test_development_mode_renders_the_same_records_for_humans(output: Path) -> None:
    rrd_logging.configure(mode="development", output=str(output))
    logging.getLogger("rrd.test").info("hello", extra={"event": "a.b", "worker_pid": 7})
    (line,) = lines(output)
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} INFO  a\.b +hello  worker_pid=7$", line)


def test_timestamps_are_utc_with_milliseconds() -> None:
    assert rrd_logging.timestamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert rrd_logging.timestamp(1795947466.1239) == "2026-11-29T10:17:46.123Z"
