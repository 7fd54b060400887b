"""Each schedule's last tick, kept on disk so that it survives a restart.

Room: plugins (ticker). Imports clock only. As systemd's `Persistent=` does for timers, the
time of each schedule's last tick is kept in `<state_dir>/<plugin>.json`, so that after a
restart a worker's `lastTick` is still true and a tick that fell due while rrd was down can be
sent once at start (the runner decides that; this module only remembers).

The loop never touches the file: it reads at load and writes in a thread. A tick only updates
memory and wakes the one writer task, which writes at most once per `min_interval` (a 10 ms
ticker must not write a hundred files a second), each time the latest values, atomically (a
temp file, fsync, rename, fsync of the directory). The state is a convenience: a file that
cannot be read, a directory that cannot be used or a write that fails is logged and rrd goes
on ticking.

The file holds only times, yet it is written 0600 (mkstemp's mode): nothing but rrd reads it,
and an operator asks `rrd ticker list`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rrd.clock import Clock, SystemClock

log = logging.getLogger("rrd.ticker.state")

VERSION = 1
DEFAULT_MIN_INTERVAL = 1.0
"""Seconds between two writes of one file; flush() does not wait for it."""
MAX_FILE_BYTES = 16 << 20
"""A longer file is not ours (a schedule costs ~50 bytes): set aside unread."""
TEMP_SUFFIX = ".tmp"


def state_path(directory: str, plugin: str) -> str:
    """The file of `plugin`'s schedules in `directory`; ValueError for a name that is no file
    name."""
    if plugin in ("", ".", "..") or "/" in plugin or "\0" in plugin:
        raise ValueError(f"{plugin!r} cannot name a state file")
    return os.path.join(directory, f"{plugin}.json")


def encode_state(ticks: Mapping[str, float]) -> bytes:
    """The file's bytes: {"version": 1, "schedules": {NAME: {"last_tick": UNIX_SECONDS}}}."""
    document = {
        "version": VERSION,
        "schedules": {name: {"last_tick": ticks[name]} for name in sorted(ticks)},
    }
    return json.dumps(document, indent=2, allow_nan=False).encode("ascii") + b"\n"


def parse_state(data: bytes) -> dict[str, float]:
    """Each schedule's last tick from the file's bytes; ValueError saying what is wrong."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    version = document.get("version")
    if version != VERSION or isinstance(version, bool):
        raise ValueError(f"version {version!r}, not {VERSION}")
    schedules = document.get("schedules")
    if not isinstance(schedules, dict):
        raise ValueError('"schedules" is not an object')
    ticks: dict[str, float] = {}
    for name, entry in schedules.items():
        last_tick = entry.get("last_tick") if isinstance(entry, dict) else None
        if not isinstance(last_tick, int | float) or not _is_time(last_tick):
            raise ValueError(f"schedule {name!r} has no last_tick in unix seconds")
        ticks[name] = float(last_tick)
    return ticks


def _is_time(value: float) -> bool:
    return not isinstance(value, bool) and math.isfinite(value)


def directory_problem(directory: str) -> str | None:
    """Why rrd cannot keep files in `directory`, or None. Blocks: call it in a thread."""
    try:
        status = os.stat(directory)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISDIR(status.st_mode):
        return "not a directory"
    effective = os.access in os.supports_effective_ids
    if not os.access(directory, os.W_OK | os.X_OK, effective_ids=effective):
        return "not writable by rrd's user"
    return None


def write_state(path: str, data: bytes) -> None:
    """Replace `path` by `data` atomically: a reader, or a crash, sees the old file or the new
    one whole. Blocks: call it in a thread."""
    directory, name = os.path.split(path)
    import tempfile  # here: its imports (random, shutil) cost 0.7 MiB of a daemon keeping no state

    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=directory or ".")
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                if written <= 0:
                    raise OSError(errno.EIO, "the state file took no bytes")
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _sync_directory(directory or ".")


def _sync_directory(directory: str) -> None:
    """Make the rename durable; a file system that cannot fsync a directory is let be."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@dataclass
class _Read:
    """What reading a state file found."""

    ticks: dict[str, float] = field(default_factory=dict)
    unavailable: str | None = None
    corrupt: str | None = None


def _read_state(path: str) -> _Read:
    """Blocks: runs in a thread. Also removes the temp files a crash mid-write left."""
    directory, name = os.path.split(path)
    problem = directory_problem(directory)
    if problem is not None:
        return _Read(unavailable=problem)
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(f".{name}.") and entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return _Read()
    except OSError as exc:
        return _Read(corrupt=f"cannot read it ({exc.strerror or exc})")
    if len(data) > MAX_FILE_BYTES:
        return _Read(corrupt=f"longer than {MAX_FILE_BYTES} bytes")
    try:
        return _Read(ticks=parse_state(data))
    except ValueError as exc:
        return _Read(corrupt=str(exc))


class TickState:
    """One plugin's schedules' last ticks, in `<dir>/<plugin>.json`.

    `path` None keeps them in memory only (no state directory, or one rrd cannot use): every
    save is then a no-op. Use it from the loop; the writes run in threads.
    """

    def __init__(
        self,
        path: str | None,
        ticks: Mapping[str, float] | None = None,
        *,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        clock: Clock | None = None,
    ) -> None:
        self.path = path
        self.min_interval = min_interval
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.writes = 0
        """Writes that reached the disk."""
        self.write_failures = 0
        self._ticks: dict[str, float] = dict(ticks or {})
        self._changes = 0
        self._saved = 0
        """How many changes the file on disk holds: `_saved < _changes` means dirty."""
        self._last_write = -math.inf
        self._failing = False
        self._writer: asyncio.Task[None] | None = None
        self._pause: asyncio.Future[None] | None = None
        self._flushers: list[tuple[int, asyncio.Future[None]]] = []

    @classmethod
    async def load(
        cls,
        directory: str,
        plugin: str,
        *,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        clock: Clock | None = None,
    ) -> TickState:
        """Read `<directory>/<plugin>.json` in a thread. A missing file is an empty state; a
        corrupt one too, with a warning; a directory rrd cannot use, a warning and no
        persistence. Never raises for what is on disk."""
        path = state_path(directory, plugin)
        found = await asyncio.to_thread(_read_state, path)
        context = {"plugin": plugin, "path": path}
        if found.unavailable is not None:
            log.warning(
                f"cannot keep the ticker's last ticks in {directory}: {found.unavailable}; "
                "they will not survive a restart",
                extra={"event": "ticker.state_unavailable", "error": found.unavailable, **context},
            )
            return cls(None, min_interval=min_interval, clock=clock)
        if found.corrupt is not None:
            log.warning(
                f"ignoring the ticker's state file {path}: {found.corrupt}; "
                "it will be written anew at the next tick",
                extra={"event": "ticker.state_corrupt", "error": found.corrupt, **context},
            )
        return cls(path, found.ticks, min_interval=min_interval, clock=clock)

    def last(self, schedule: str) -> float | None:
        """Unix seconds of the schedule's last tick, or None: it never ticked (that we know)."""
        return self._ticks.get(schedule)

    def snapshot(self) -> dict[str, float]:
        """Every schedule's last tick."""
        return dict(self._ticks)

    def record(self, schedule: str, at: float) -> None:
        """The schedule ticked at `at` (unix seconds). Never blocks: the write comes later."""
        if not math.isfinite(at):
            raise ValueError(f"a tick at {at} is no time")
        self._ticks[schedule] = at
        self._changed()

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the schedules not in `keep` (no longer configured)."""
        kept = set(keep)
        gone = [name for name in self._ticks if name not in kept]
        for name in gone:
            del self._ticks[name]
        if gone:
            self._changed()

    async def flush(self) -> None:
        """Write what was recorded now, and wait until it is on disk or the write failed (the
        failure is logged, not raised)."""
        if self.path is None or self._saved >= self._changes:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._flushers.append((self._changes, waiter))
        if self._pause is not None:
            self._pause.cancel()
        self._start_writer()
        await waiter

    def _changed(self) -> None:
        self._changes += 1
        self._start_writer()

    def _start_writer(self) -> None:
        if self.path is None or self._writer is not None:
            return
        self._writer = asyncio.get_running_loop().create_task(
            self._write_pending(), name=f"ticker-state:{self.path}"
        )

    async def _write_pending(self) -> None:
        """The one writer of the file: writes until it holds every change, or a write fails
        (then the next change, or a flush, tries again)."""
        assert self.path is not None
        try:
            while self._saved < self._changes:
                if not self._flushers:
                    await self._pause_until(self._last_write + self.min_interval)
                changes = self._changes
                ticks = dict(self._ticks)
                self._last_write = self.clock.monotonic()
                try:
                    await asyncio.to_thread(_encode_and_write, self.path, ticks)
                except OSError as exc:
                    self._write_failed(exc)
                    return
                self._written(changes)
        finally:
            self._writer = None
            self._release_flushers(None)

    async def _pause_until(self, deadline: float) -> None:
        """Sleep until `deadline` on the clock, or until a flush cancels the pause."""
        if deadline <= self.clock.monotonic():
            return
        pause = asyncio.ensure_future(self.clock.sleep_until(deadline))
        self._pause = pause
        try:
            await asyncio.wait({pause})
        finally:
            pause.cancel()
            self._pause = None

    def _written(self, changes: int) -> None:
        self._saved = changes
        self.writes += 1
        self._release_flushers(changes)
        if self._failing:
            self._failing = False
            log.info(
                f"the ticker's last ticks are saved to {self.path} again",
                extra={"event": "ticker.state_write_resumed", "path": self.path},
            )

    def _write_failed(self, exc: OSError) -> None:
        self.write_failures += 1
        if self._failing:
            return
        self._failing = True
        reason = exc.strerror or str(exc)
        log.warning(
            f"cannot save the ticker's last ticks to {self.path}: {reason}; "
            "trying again at the next tick",
            extra={
                "event": "ticker.state_write_failed",
                "path": self.path,
                "error": reason,
                "errno": errno.errorcode.get(exc.errno or 0, str(exc.errno)),
            },
        )

    def _release_flushers(self, changes: int | None) -> None:
        """Wake the flushes that wait for no more than `changes` (None: every one)."""
        waiting = []
        for target, waiter in self._flushers:
            if changes is None or target <= changes:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append((target, waiter))
        self._flushers = waiting


def _encode_and_write(path: str, ticks: Mapping[str, float]) -> None:
    write_state(path, encode_state(ticks))
