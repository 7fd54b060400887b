"""Hot reload's eyes: watchdog's observer thread, bridged to the loop (daemon tier, rank 7).

The daemon reloads when the `.rr.yaml` or the `--dotenv` file changes. watchdog watches from
its own threads, so this module is the one place where those threads meet the loop. Imports:
the stdlib and watchdog only.

Rules:
- Directories are watched, not files, non-recursively: editors save by writing a temporary
  file and renaming it over the config, which a watch on the file itself would lose. A file
  that is a symlink also has its target's directory watched and its target's name counted
  (symlink deploys swap the link atomically, RoadRunner issue #929, or edit the target in
  place); `rearm()` re-resolves the links after each reload.
- Only events naming a watched file (as `src_path` or `dest_path`) count.
- The observer thread touches the loop only through `call_soon_threadsafe`. It reads the files
  and hashes them itself, so the loop never waits on file I/O; the loop keeps the newest digest
  and, `debounce` seconds after the last event, calls `on_change` if the digest differs from
  the last one reported. An event that ends a save (a rename onto the file, a close after
  writing it) settles after `SAVED_DEBOUNCE` instead: the save is whole, only its echoes are
  still to come. One save gives 3-8 events and one call; a touch gives none. A missing file
  is a state of its own.
- After each reload the daemon says what it read (`loaded`: the files' digest before and
  after its read, or None when they differ); that is the baseline from then on, so a save
  that raced the read is reported again rather than lost.
- When inotify is exhausted (EMFILE for instances, ENOSPC for watches) the watcher polls with
  `PollingObserver` instead, once a second, and says so (`polling`, `watch.polling`).
- `start()` and `rearm()` run on the loop and make a few syscalls (inotify watches, and
  `start()` hashes the files once for the baseline: small config files, read at boot).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Sequence

import watchdog.events
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

log = logging.getLogger("rrd.watch")

# No open or close-without-write events: the observer thread's own reads must not wake it.
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
]
if hasattr(watchdog.events, "FileAttribEvent"):
    # watchdog >= 5 reports a metadata change (touch, chmod) apart; older ones as modified.
    _EVENTS.append(watchdog.events.FileAttribEvent)
_EXHAUSTED = (errno.EMFILE, errno.ENOSPC)
POLL_INTERVAL = 1.0
SAVED_DEBOUNCE = 0.01
JOIN_TIMEOUT = 2.0


def _targets(files: Sequence[str]) -> tuple[frozenset[str], frozenset[str]]:
    """The names that count and the directories to watch, symlinks resolved as they are now."""
    names: set[str] = set()
    for path in files:
        names.add(path)
        names.add(os.path.realpath(path))
    return frozenset(names), frozenset(os.path.dirname(name) for name in names)


def _digest(files: Sequence[str]) -> bytes:
    """Every file's contents, through its links, as one value to compare; missing or unreadable
    counts. The contents themselves, not a hash: config files are small, the comparison is
    exact, and hashlib would load OpenSSL's libcrypto (2 MiB of rrd's RSS)."""
    parts: list[bytes] = []
    for path in files:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                # A FIFO or a device would block the read: only its identity counts.
                parts.append(f"special {os.stat(path).st_ino}\0".encode())
                continue
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            parts.append(b"missing\0")
        except OSError as exc:
            parts.append(f"error {exc.errno}\0".encode())
        else:
            parts.append(b"file %d\0" % len(data) + data)
    return b"".join(parts)


class _Handler(FileSystemEventHandler):
    """Forwards every event to the watcher, in the observer thread."""

    def __init__(self, on_event: Callable[[FileSystemEvent], None]) -> None:
        self._on_event = on_event

    def dispatch(self, event: FileSystemEvent) -> None:
        self._on_event(event)


class ConfigWatcher:
    """Calls `on_change` on the loop when the contents of `files` really change."""

    def __init__(
        self,
        files: Iterable[str | os.PathLike[str]],
        on_change: Callable[[], None],
        *,
        loop: asyncio.AbstractEventLoop,
        debounce: float = 0.1,
    ) -> None:
        self._files = tuple(dict.fromkeys(os.path.abspath(os.fspath(file)) for file in files))
        self._on_change = on_change
        self._loop = loop
        self._debounce = debounce
        self._names, self._dirs = _targets(self._files)
        self._handler = _Handler(self._on_event)
        self._observer: BaseObserver | None = None
        self._stopped = False
        self.polling = False
        # Digests are numbered as they are taken, under the lock: the loop keeps the newest.
        self._hash_lock = threading.Lock()
        self._taken = 0
        self._seen = 0
        self._baseline: bytes | None = b""
        self._latest = b""
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Watch; a directory that cannot be watched (missing) is only a warning."""
        if self._stopped or self._observer is not None:
            return
        try:
            self._observer = Observer()
        except OSError as exc:
            self._observer = self._polling_observer(exc)
        self._observer.start()
        self._schedule()
        self._seen, self._baseline = self._snapshot()
        self._latest = self._baseline
        log.info(
            "watching %s",
            ", ".join(self._files),
            extra={"event": "watch.started", "dirs": sorted(self._dirs), "polling": self.polling},
        )

    def stop(self) -> None:
        """Stop watching and join the observer thread, within JOIN_TIMEOUT; idempotent."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        observer, self._observer = self._observer, None
        if observer is not None:
            _close(observer)

    def rearm(self) -> None:
        """Re-resolve the symlinks and watch again: after a swap the target has moved."""
        if self._stopped:
            return
        self._names, self._dirs = _targets(self._files)
        if self._observer is None:
            return
        self._observer.unschedule_all()
        self._schedule()
        # An edit made while the new target was not watched left no event: look once more.
        future = self._loop.run_in_executor(None, self._snapshot)
        future.add_done_callback(self._looked)

    def _schedule(self) -> None:
        assert self._observer is not None
        for directory in sorted(self._dirs):
            try:
                self._observer.schedule(
                    self._handler, directory, recursive=False, event_filter=_EVENTS
                )
            except OSError as exc:
                if exc.errno in _EXHAUSTED and not self.polling:
                    self._fall_back(exc)
                    return
                log.warning(
                    "cannot watch %s (%s): its files will not reload",
                    directory,
                    exc.strerror or exc,
                    extra={"event": "watch.skipped", "dir": directory},
                )

    def _fall_back(self, exc: OSError) -> None:
        """inotify ran out while scheduling: poll every directory instead."""
        assert self._observer is not None
        _close(self._observer)
        self._observer = self._polling_observer(exc)
        self._observer.start()
        self._schedule()

    def _polling_observer(self, exc: OSError) -> BaseObserver:
        self.polling = True
        log.warning(
            "inotify unavailable (%s): polling the config every %gs",
            exc.strerror or exc,
            POLL_INTERVAL,
            extra={"event": "watch.polling", "errno": exc.errno},
        )
        from watchdog.observers.polling import PollingObserver  # rarely needed: 0.3 MiB

        return PollingObserver(timeout=POLL_INTERVAL)

    def digest(self) -> bytes:
        """The files' contents now, as the watcher compares them; from any thread but the
        loop's (the daemon's config reader takes one before and after it reads)."""
        return _digest(self._files)

    def loaded(self, digest: bytes | None) -> None:
        """On the loop, once a reload has read the files: what it read is the baseline now
        (None: they changed while it read). A save that came between the change reported
        and that read would otherwise be lost: its digest is the one reported already."""
        self._baseline = digest
        if self._timer is None and not self._stopped and self._latest != digest:
            self._timer = self._loop.call_later(SAVED_DEBOUNCE, self._settle)

    def _snapshot(self) -> tuple[int, bytes]:
        """A numbered digest of the files; any thread but the loop's, except at start."""
        with self._hash_lock:
            self._taken += 1
            return self._taken, _digest(self._files)

    def _on_event(self, event: FileSystemEvent) -> None:
        """Observer thread: hash on a relevant event and hand the digest to the loop."""
        names = self._names
        if self._stopped or not any(
            os.fsdecode(path) in names for path in (event.src_path, event.dest_path) if path
        ):
            return
        saved = isinstance(event, FileClosedEvent) or (
            isinstance(event, FileMovedEvent) and os.fsdecode(event.dest_path) in names
        )
        taken, digest = self._snapshot()
        with contextlib.suppress(RuntimeError):  # the loop closed under a late event
            self._loop.call_soon_threadsafe(self._arrived, taken, digest, saved)

    def _looked(self, future: asyncio.Future[tuple[int, bytes]]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._arrived(*future.result())

    def _arrived(self, taken: int, digest: bytes, saved: bool = False) -> None:
        """On the loop: keep the newest digest and (re)start the debounce, a short one when
        the event ended a save."""
        if self._stopped or taken <= self._seen:
            return
        self._seen, self._latest = taken, digest
        if self._timer is not None:
            self._timer.cancel()
        delay = min(self._debounce, SAVED_DEBOUNCE) if saved else self._debounce
        self._timer = self._loop.call_later(delay, self._settle)

    def _settle(self) -> None:
        self._timer = None
        if self._latest == self._baseline:
            return
        self._baseline = self._latest
        log.debug("config changed", extra={"event": "watch.changed"})
        self._on_change()


def _close(observer: BaseObserver) -> None:
    """Stop an observer and join its thread, bounded."""
    observer.stop()
    if observer.is_alive():
        observer.join(JOIN_TIMEOUT)
        if observer.is_alive():
            log.warning(
                "the file watcher did not stop within %gs",
                JOIN_TIMEOUT,
                extra={"event": "watch.stop_timeout"},
            )
