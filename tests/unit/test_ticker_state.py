"""The ticker's state file: round trips, damaged files and directories, coalesced atomic writes
in threads, never on the loop."""

from __future__ import annotations

import asyncio
import builtins
import errno
import json
import logging
import math
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrd.plugins.ticker import state as state_module
from rrd.plugins.ticker.config import default_state_dir
from rrd.plugins.ticker.state import (
    TickState,
    encode_state,
    parse_state,
    state_path,
)
from tests.fakes import FakeClock
from tests.helpers import eventually

WALL = 1_796_000_000.0


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == name]


def on_disk(directory: Path, plugin: str = "ticker") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((directory / f"{plugin}.json").read_text())
    return loaded


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


class WriteSpy:
    """Stands in for the thread's write: records when the writer started it (on its clock) and
    what, in which thread, how many at once; optionally holds each write until released."""

    def __init__(self, state: TickState | None = None, *, hold: bool = False) -> None:
        self.state = state
        self.starts: list[float] = []
        self.written: list[dict[str, float]] = []
        self.threads: set[int] = set()
        self.running = 0
        self.most_at_once = 0
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._lock = threading.Lock()

    def __call__(self, path: str, ticks: Mapping[str, float]) -> None:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.threads.add(threading.get_ident())
            if self.state is not None:  # the fake clock may have moved since: read the writer's
                self.starts.append(self.state._last_write)
        try:
            assert self.release.wait(10)
            with self._lock:
                self.written.append(dict(ticks))
        finally:
            with self._lock:
                self.running -= 1


# -- $STATE_DIRECTORY ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"STATE_DIRECTORY": ""}, None),
        ({"STATE_DIRECTORY": "/var/lib/rrd"}, "/var/lib/rrd"),
        ({"STATE_DIRECTORY": "/var/lib/rrd:/var/lib/rrd-cache"}, "/var/lib/rrd"),
        ({"STATE_DIRECTORY": ":/var/lib/other"}, None),
    ],
)
def test_default_state_dir(environ: dict[str, str], expected: str | None) -> None:
    assert default_state_dir(environ) == expected


@pytest.mark.parametrize("plugin", ["", ".", "..", "a/b", "../ticker", "nul\0"])
def test_a_plugin_name_that_is_no_file_name_is_refused(plugin: str) -> None:
    with pytest.raises(ValueError, match="cannot name a state file"):
        state_path("/var/lib/rrd", plugin)


# -- Reading ------------------------------------------------------------------------------


async def test_round_trip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = await TickState.load(str(tmp_path), "ticker")
    assert first.path == str(tmp_path / "ticker.json")
    first.record("backup", WALL)
    first.record("report", WALL + 0.125)
    first.record("backup", WALL + 60.5)
    await first.flush()

    assert on_disk(tmp_path) == {
        "version": 1,
        "schedules": {"backup": {"last_tick": WALL + 60.5}, "report": {"last_tick": WALL + 0.125}},
    }
    assert stat.S_IMODE((tmp_path / "ticker.json").stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []

    second = await TickState.load(str(tmp_path), "ticker")
    assert second.last("backup") == WALL + 60.5
    assert second.last("report") == WALL + 0.125
    assert second.last("never") is None
    assert second.snapshot() == first.snapshot()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_plugins_keep_files_of_their_own(tmp_path: Path) -> None:
    ticker = await TickState.load(str(tmp_path), "ticker")
    other = await TickState.load(str(tmp_path), "ticker2")
    ticker.record("a", WALL)
    other.record("a", WALL + 1)
    await asyncio.gather(ticker.flush(), other.flush())
    assert (await TickState.load(str(tmp_path), "ticker")).last("a") == WALL
    assert (await TickState.load(str(tmp_path), "ticker2")).last("a") == WALL + 1


async def test_a_missing_file_is_an_empty_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = await TickState.load(str(tmp_path), "ticker")
    assert state.snapshot() == {}
    await state.flush()
    assert list(tmp_path.iterdir()) == []
    assert caplog.records == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "not JSON"),
        (b'{"version": 1, "schedules": {"a": {"last_tick": 17', "not JSON"),
        (b"\xff\xfe\xfa", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"version": 2, "schedules": {}}', "version 2"),
        (b'{"version": true, "schedules": {}}', "version True"),
        (b'{"schedules": {}}', "version None"),
        (b'{"version": 1, "schedules": []}', '"schedules" is not an object'),
        (b'{"version": 1, "schedules": {"a": 17}}', "schedule 'a'"),
        (b'{"version": 1, "schedules": {"a": {"last_tick": "17"}}}', "schedule 'a'"),
        (b'{"version": 1, "schedules": {"a": {"last_tick": NaN}}}', "schedule 'a'"),
        (b'{"version": 1, "schedules": {"a": {"last_tick": Infinity}}}', "schedule 'a'"),
        (b'{"version": 1, "schedules": {"a": {"last_tick": false}}}', "schedule 'a'"),
    ],
)
async def test_a_corrupt_file_is_an_empty_state_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, why: str
) -> None:
    (tmp_path / "ticker.json").write_bytes(content)
    state = await TickState.load(str(tmp_path), "ticker")
    assert state.snapshot() == {}
    (warning,) = events(caplog, "ticker.state_corrupt")
    assert warning.levelno == logging.WARNING
    assert why in vars(warning)["error"]
    assert vars(warning)["path"] == str(tmp_path / "ticker.json")
    assert len(caplog.records) == 1

    state.record("a", WALL)
    await state.flush()
    assert on_disk(tmp_path)["schedules"] == {"a": {"last_tick": WALL}}


async def test_an_oversized_file_is_set_aside_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_module, "MAX_FILE_BYTES", 64)
    (tmp_path / "ticker.json").write_bytes(encode_state({f"s{i}": WALL for i in range(10)}))
    state = await TickState.load(str(tmp_path), "ticker")
    assert state.snapshot() == {}
    (warning,) = events(caplog, "ticker.state_corrupt")
    assert "longer than 64 bytes" in vars(warning)["error"]


async def test_extra_keys_are_ignored(tmp_path: Path) -> None:
    document = {"version": 1, "schedules": {"a": {"last_tick": 17, "by": "a newer rrd"}}, "x": 1}
    (tmp_path / "ticker.json").write_text(json.dumps(document))
    state = await TickState.load(str(tmp_path), "ticker")
    assert state.last("a") == 17.0


async def test_load_removes_what_a_crash_mid_write_left(tmp_path: Path) -> None:
    (tmp_path / "ticker.json").write_bytes(encode_state({"a": WALL}))
    (tmp_path / ".ticker.json.k2j4x9_q.tmp").write_bytes(b'{"version": 1, "sch')
    (tmp_path / ".other.json.k2j4x9_q.tmp").write_bytes(b"not ours")
    state = await TickState.load(str(tmp_path), "ticker")
    assert state.last("a") == WALL
    assert leftovers(tmp_path) == [".other.json.k2j4x9_q.tmp"]


# -- A directory rrd cannot use -----------------------------------------------------------


async def expect_unavailable(
    directory: str, caplog: pytest.LogCaptureFixture, why: str
) -> TickState:
    state = await TickState.load(directory, "ticker")
    assert state.path is None
    (warning,) = events(caplog, "ticker.state_unavailable")
    assert warning.levelno == logging.WARNING
    assert why in vars(warning)["error"]
    assert len(caplog.records) == 1

    state.record("a", WALL)
    await state.flush()
    assert state.last("a") == WALL
    assert state.writes == 0
    assert len(caplog.records) == 1
    return state


async def test_a_missing_directory_means_no_persistence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await expect_unavailable(str(tmp_path / "gone"), caplog, "No such file or directory")
    assert list(tmp_path.iterdir()) == []


async def test_a_directory_under_a_file_means_no_persistence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "plain").write_text("a regular file")
    await expect_unavailable(str(tmp_path / "plain" / "state"), caplog, "Not a directory")


async def test_a_file_in_place_of_the_directory_means_no_persistence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "plain").write_text("a regular file")
    await expect_unavailable(str(tmp_path / "plain"), caplog, "not a directory")
    assert (tmp_path / "plain").read_text() == "a regular file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any mode")
async def test_a_read_only_directory_means_no_persistence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        await expect_unavailable(str(locked), caplog, "not writable")
    finally:
        locked.chmod(0o700)


async def test_a_directory_access_refuses_means_no_persistence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []

    def refuse(path: Any, mode: int, **kwargs: Any) -> bool:
        asked.append(mode)
        return False

    monkeypatch.setattr(os, "access", refuse)  # as a read-only file system answers, even root
    await expect_unavailable(str(tmp_path), caplog, "not writable")
    assert asked == [os.W_OK | os.X_OK]


# -- Writing ------------------------------------------------------------------------------


async def test_records_in_a_burst_are_coalesced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaced: list[str] = []
    real_replace = os.replace

    def counting_replace(src: Any, dst: Any) -> None:
        replaced.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", counting_replace)
    clock = FakeClock()
    state = await TickState.load(str(tmp_path), "ticker", clock=clock)

    for n in range(100):  # one record every 0.5 ms: 100 in 50 ms
        state.record("fast", WALL + n)
        await clock.advance(0.0005)
    await eventually(lambda: state.writes >= 1)
    assert len(replaced) <= 2

    await clock.advance(state.min_interval)
    await eventually(lambda: state.writes == 2)
    assert len(replaced) == 2
    assert on_disk(tmp_path)["schedules"] == {"fast": {"last_tick": WALL + 99}}
    await state.flush()
    assert len(replaced) == 2  # nothing new to write


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0, max_value=0.7), min_size=1, max_size=40),
    min_interval=st.sampled_from([0.25, 1.0]),
)
def test_writes_are_a_min_interval_apart_and_the_last_one_is_the_latest(
    gaps: list[float], min_interval: float
) -> None:
    asyncio.run(_spaced_writes(gaps, min_interval))


async def _spaced_writes(gaps: list[float], min_interval: float) -> None:
    clock = FakeClock()
    state = TickState("/nonexistent/ticker.json", min_interval=min_interval, clock=clock)
    spy = WriteSpy(state)
    original = state_module._encode_and_write
    state_module._encode_and_write = spy
    try:
        for n, gap in enumerate(gaps):
            state.record("s", WALL + n)
            await clock.advance(gap)
        await clock.advance(min_interval)
        await eventually(lambda: state.writes == len(spy.written) and state._writer is None)
        await state.flush()
    finally:
        state_module._encode_and_write = original
    assert all(b - a >= min_interval for a, b in zip(spy.starts, spy.starts[1:], strict=False))
    assert spy.written[-1] == {"s": WALL + len(gaps) - 1}
    assert spy.most_at_once == 1
    assert threading.get_ident() not in spy.threads


async def test_flush_writes_at_once_and_the_latest(tmp_path: Path) -> None:
    clock = FakeClock()
    state = await TickState.load(str(tmp_path), "ticker", clock=clock)
    state.record("a", WALL)
    await state.flush()
    assert on_disk(tmp_path)["schedules"] == {"a": {"last_tick": WALL}}

    state.record("a", WALL + 1)  # within min_interval of the last write: the writer waits
    await eventually(lambda: state._pause is not None)
    state.record("a", WALL + 2)
    await state.flush()  # the fake clock never moved
    assert on_disk(tmp_path)["schedules"] == {"a": {"last_tick": WALL + 2}}
    assert state.writes == 2


async def test_records_during_a_write_go_into_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = WriteSpy(hold=True)
    monkeypatch.setattr(state_module, "_encode_and_write", spy)
    state = TickState("/nonexistent/ticker.json", min_interval=3600)
    state.record("a", WALL)
    await eventually(lambda: spy.running == 1)
    state.record("a", WALL + 1)
    state.record("b", WALL + 2)
    flushes = [asyncio.create_task(state.flush()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(f.done() for f in flushes)
    spy.release.set()
    await asyncio.gather(*flushes)
    assert spy.written == [{"a": WALL}, {"a": WALL + 1, "b": WALL + 2}]
    assert spy.most_at_once == 1


async def test_a_failed_write_leaves_the_old_file_and_warns_once_per_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="rrd.ticker.state")
    old = encode_state({"a": WALL})
    (tmp_path / "ticker.json").write_bytes(old)
    state = await TickState.load(str(tmp_path), "ticker")
    real_fsync = os.fsync

    def disk_full(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full)
    for n in range(1, 4):
        state.record("a", WALL + n)
        await state.flush()  # never raises
        assert (tmp_path / "ticker.json").read_bytes() == old
        assert leftovers(tmp_path) == []
    assert state.write_failures == 3
    (warning,) = events(caplog, "ticker.state_write_failed")
    assert warning.levelno == logging.WARNING
    assert vars(warning)["errno"] == "ENOSPC"

    monkeypatch.setattr(os, "fsync", real_fsync)
    await state.flush()  # what the failures left unwritten
    assert on_disk(tmp_path)["schedules"] == {"a": {"last_tick": WALL + 3}}
    assert len(events(caplog, "ticker.state_write_resumed")) == 1

    monkeypatch.setattr(os, "fsync", disk_full)
    state.record("a", WALL + 4)
    await state.flush()
    assert len(events(caplog, "ticker.state_write_failed")) == 2  # a new run of failures


async def test_a_failed_write_is_retried_at_the_next_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    state = await TickState.load(str(tmp_path), "ticker", clock=clock)
    real_replace = os.replace

    def read_only(src: Any, dst: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", read_only)
    state.record("a", WALL)
    await eventually(lambda: state.write_failures == 1 and state._writer is None)
    await clock.advance(10)
    assert state.write_failures == 1  # no retry without a record
    assert not (tmp_path / "ticker.json").exists()

    monkeypatch.setattr(os, "replace", real_replace)
    state.record("b", WALL + 1)
    await eventually(lambda: state.writes == 1)
    assert on_disk(tmp_path)["schedules"] == {
        "a": {"last_tick": WALL},
        "b": {"last_tick": WALL + 1},
    }
    assert leftovers(tmp_path) == []


async def test_no_file_io_on_the_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    calls: list[tuple[str, bool]] = []

    def spying(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            ours = name == "fsync" or any(str(tmp_path) in str(a) for a in args)
            if ours:
                calls.append((name, threading.get_ident() == loop_thread))
            return real(*args, **kwargs)

        return call

    for name in ("open", "replace", "fsync", "stat", "scandir", "unlink", "access"):
        monkeypatch.setattr(os, name, spying(name, getattr(os, name)))
    monkeypatch.setattr(builtins, "open", spying("builtins.open", builtins.open))

    (tmp_path / "ticker.json").write_bytes(encode_state({"old": WALL}))
    state = await TickState.load(str(tmp_path), "ticker")
    state.record("a", WALL)
    state.forget(["a"])
    await state.flush()
    state.record("a", WALL + 1)
    await state.flush()

    names = {name for name, _ in calls}
    assert {"builtins.open", "replace", "fsync", "open", "stat"} <= names
    assert [name for name, on_loop in calls if on_loop] == []


async def test_forget_drops_schedules_no_longer_configured(tmp_path: Path) -> None:
    state = await TickState.load(str(tmp_path), "ticker")
    for name in ("a", "b", "c"):
        state.record(name, WALL)
    await state.flush()
    state.forget(iter(["a", "c", "new"]))
    assert state.last("b") is None
    assert state.snapshot() == {"a": WALL, "c": WALL}
    await state.flush()
    assert set(on_disk(tmp_path)["schedules"]) == {"a", "c"}

    writes = state.writes
    state.forget(["a", "c"])
    await state.flush()
    assert state.writes == writes  # nothing was dropped: nothing to write


async def test_a_memory_only_state_still_answers(tmp_path: Path) -> None:
    state = TickState(None)
    state.record("a", WALL)
    state.forget(["a"])
    await state.flush()
    assert state.last("a") == WALL
    assert state.writes == 0


@pytest.mark.parametrize("at", [math.nan, math.inf, -math.inf])
async def test_a_tick_at_no_time_is_refused(at: float) -> None:
    state = TickState(None)
    with pytest.raises(ValueError, match="no time"):
        state.record("a", at)
    assert state.last("a") is None


# -- The format ---------------------------------------------------------------------------

finite_times = st.floats(allow_nan=False, allow_infinity=False)


@given(st.dictionaries(st.text(), finite_times, max_size=20))
def test_encode_parse_round_trip(ticks: dict[str, float]) -> None:
    assert parse_state(encode_state(ticks)) == ticks


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_parse_raises_only_value_error(data: bytes) -> None:
    try:
        ticks = parse_state(data)
    except ValueError:
        return
    assert all(isinstance(t, float) and math.isfinite(t) for t in ticks.values())


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.text(min_size=1), finite_times, min_size=1, max_size=8))
def test_files_round_trip(ticks: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        assert asyncio.run(_save_and_load(directory, ticks)) == ticks


async def _save_and_load(directory: str, ticks: dict[str, float]) -> dict[str, float]:
    state = await TickState.load(directory, "ticker")
    for name, at in ticks.items():
        state.record(name, at)
    await state.flush()
    return (await TickState.load(directory, "ticker")).snapshot()
