"""ConfigWatcher against real files and a real observer: saves, swaps, touches, fallbacks."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers.inotify import InotifyObserver

import rrd.watch
from rrd.watch import ConfigWatcher
from tests.helpers import ROOT, eventually

QUIET = 0.5  # long enough for the debounce and a late event, short enough to run often


class Calls:
    """An on_change that counts, and an Event to wait on the next call."""

    def __init__(self) -> None:
        self.count = 0
        self.called = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.called.set()

    async def next(self, timeout: float = 10.0) -> None:
        """Wait for a call after the last one seen."""
        await asyncio.wait_for(self.called.wait(), timeout)
        self.called.clear()

    async def none(self, within: float = QUIET) -> None:
        """Assert that no call comes within `within` seconds."""
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.called.wait(), within)


@pytest.fixture
def watchers() -> Iterator[list[ConfigWatcher]]:
    made: list[ConfigWatcher] = []
    yield made
    for watcher in made:
        watcher.stop()


def watch(made: list[ConfigWatcher], *files: Path, **kwargs: Any) -> tuple[ConfigWatcher, Calls]:
    calls = Calls()
    watcher = ConfigWatcher(files, calls, loop=asyncio.get_running_loop(), **kwargs)
    made.append(watcher)
    watcher.start()
    return watcher, calls


def spy_handoffs(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record whose callbacks cross from other threads to the running loop."""
    loop = asyncio.get_running_loop()
    handed: list[object] = []
    threadsafe = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(getattr(callback, "__self__", None))
        return threadsafe(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    return handed


def config(tmp_path: Path, text: str = "version: '3'\n") -> Path:
    path = tmp_path / ".rr.yaml"
    path.write_text(text)
    return path


def atomic_save(path: Path, text: str) -> None:
    """What most editors do: a temporary file in the same directory, renamed over the file."""
    temporary = path.with_name(f".{path.name}.swp")
    with open(temporary, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def swap_link(link: Path, target: Path) -> None:
    """A symlink deploy: a new link beside the old one, renamed over it."""
    temporary = link.with_name(f".{link.name}.new")
    temporary.symlink_to(target)
    os.replace(temporary, link)


async def test_in_place_write_calls_once(tmp_path: Path, watchers: list[ConfigWatcher]) -> None:
    path = config(tmp_path)
    watcher, calls = watch(watchers, path)
    assert not watcher.polling

    path.write_text("version: '3'\nrpc: {}\n")
    await calls.next()
    await calls.none()
    assert calls.count == 1


async def test_atomic_save_calls_exactly_once(
    tmp_path: Path, watchers: list[ConfigWatcher]
) -> None:
    path = config(tmp_path)
    _, calls = watch(watchers, path)

    atomic_save(path, "version: '3'\nserver: {}\n")
    await calls.next()
    await calls.none()
    assert calls.count == 1


async def test_backup_rename_save_gives_many_events_and_one_call(
    tmp_path: Path, watchers: list[ConfigWatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow vim-style save: every step reaches the loop and restarts the debounce; the close
    that ends the save settles it without the whole debounce; one call."""
    path = config(tmp_path)
    handed = spy_handoffs(monkeypatch)
    watcher, calls = watch(watchers, path, debounce=1.0)

    def seen(count: int) -> Callable[[], bool]:
        return lambda: handed.count(watcher) >= count

    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    await eventually(seen(1))  # the config is missing now
    await calls.none(0.4)
    with open(path, "w") as file:
        file.write("version: '3'\n")
        file.flush()
        await eventually(seen(3))  # created, then modified: half written
        await calls.none(0.4)
        file.write("logs: {mode: development}\n")
        last = time.monotonic()
    backup.unlink()

    await calls.next()
    assert time.monotonic() - last < 0.9  # SAVED_DEBOUNCE, not the whole second
    await calls.none()
    assert calls.count == 1
    assert handed.count(watcher) >= 4


async def test_same_content_or_touch_does_not_call(
    tmp_path: Path, watchers: list[ConfigWatcher]
) -> None:
    path = config(tmp_path)
    _, calls = watch(watchers, path)

    path.write_text(path.read_text())
    atomic_save(path, path.read_text())
    os.utime(path)
    await calls.none()
    assert calls.count == 0


async def test_unrelated_file_in_the_same_directory_does_not_call(
    tmp_path: Path, watchers: list[ConfigWatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config(tmp_path)
    handed = spy_handoffs(monkeypatch)
    watcher, calls = watch(watchers, path)

    other = tmp_path / "other.yaml"
    other.write_text("a: 1\n")
    atomic_save(other, "a: 2\n")
    other.unlink()
    (tmp_path / ".rr.yaml.bak").write_text("version: '2.7'\n")
    await calls.none()
    assert calls.count == 0
    assert watcher not in handed  # filtered in the observer thread, never hashed


async def test_dotenv_in_another_directory_calls(
    tmp_path: Path, watchers: list[ConfigWatcher]
) -> None:
    path = config(tmp_path)
    (tmp_path / "env").mkdir()
    dotenv = tmp_path / "env" / ".env"
    dotenv.write_text("A=1\n")
    _, calls = watch(watchers, path, dotenv)

    dotenv.write_text("A=2\n")
    await calls.next()
    await calls.none()
    assert calls.count == 1


async def test_symlink_swap_then_rearm_follows_the_new_target(
    tmp_path: Path, watchers: list[ConfigWatcher]
) -> None:
    old = tmp_path / "releases" / "1" / "rr.yaml"
    new = tmp_path / "releases" / "2" / "rr.yaml"
    for target, text in ((old, "version: '3'\n"), (new, "version: '3'\nrpc: {}\n")):
        target.parent.mkdir(parents=True)
        target.write_text(text)
    (tmp_path / "current").mkdir()
    link = tmp_path / "current" / ".rr.yaml"
    link.symlink_to(old)
    watcher, calls = watch(watchers, link)

    old.write_text("version: '3'\nlogs: {}\n")  # the target edited in place
    await calls.next()
    swap_link(link, new)
    await calls.next()

    watcher.rearm()
    await calls.none()  # rearming looks again, but nothing changed
    new.write_text("version: '3'\nrpc: {listen: 'tcp://127.0.0.1:6001'}\n")
    await calls.next()
    old.write_text("version: '3'\nold: true\n")
    await calls.none()
    assert calls.count == 3


async def test_rearm_catches_an_edit_of_the_new_target_made_before_it(
    tmp_path: Path, watchers: list[ConfigWatcher]
) -> None:
    """Between a swap's call and the daemon's rearm() the new target is not watched yet."""
    old = tmp_path / "a" / "rr.yaml"
    new = tmp_path / "b" / "rr.yaml"
    for target in (old, new):
        target.parent.mkdir()
        target.write_text(f"version: '3'\n# {target.parent.name}\n")
    link = tmp_path / ".rr.yaml"
    link.symlink_to(old)
    watcher, calls = watch(watchers, link)

    swap_link(link, new)
    await calls.next()
    new.write_text("version: '3'\nedited: before rearm\n")
    await calls.none()  # unwatched until rearm
    watcher.rearm()
    await calls.next()
    assert calls.count == 2


async def test_deleted_then_recreated_calls_each_time(
    tmp_path: Path, watchers: list[ConfigWatcher]
) -> None:
    path = config(tmp_path)
    _, calls = watch(watchers, path)

    path.unlink()
    await calls.next()
    path.write_text("version: '3'\n")
    await calls.next()
    await calls.none()
    assert calls.count == 2


async def test_missing_directory_is_a_warning_and_the_rest_is_watched(
    tmp_path: Path, watchers: list[ConfigWatcher], caplog: pytest.LogCaptureFixture
) -> None:
    path = config(tmp_path)
    missing = tmp_path / "nowhere" / ".env"
    _, calls = watch(watchers, path, missing)

    assert any(getattr(r, "event", None) == "watch.skipped" for r in caplog.records)
    path.write_text("version: '3'\nkv: {}\n")
    await calls.next()


async def test_stop_joins_quickly_and_is_idempotent(
    tmp_path: Path, watchers: list[ConfigWatcher]
) -> None:
    before = set(threading.enumerate())
    path = config(tmp_path)
    watcher, calls = watch(watchers, path)
    assert set(threading.enumerate()) - before

    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1.0
    assert not set(threading.enumerate()) - before
    watcher.stop()

    path.write_text("version: '3'\nafter: stop\n")
    await calls.none()
    watcher.rearm()
    assert calls.count == 0


async def test_falls_back_to_polling_when_inotify_instances_run_out(
    tmp_path: Path, watchers: list[ConfigWatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(**kwargs: Any) -> InotifyObserver:
        raise OSError(errno.EMFILE, "inotify instance limit reached")

    monkeypatch.setattr(rrd.watch, "Observer", exhausted)
    path = config(tmp_path)
    watcher, calls = watch(watchers, path)
    assert watcher.polling

    path.write_text("version: '3'\npolled: true\n")
    await calls.next(timeout=5.0)
    await eventually(lambda: calls.count == 1)


async def test_falls_back_to_polling_when_inotify_watches_run_out(
    tmp_path: Path, watchers: list[ConfigWatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoWatches(InotifyObserver):
        def schedule(self, *args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(rrd.watch, "Observer", NoWatches)
    before = set(threading.enumerate())
    path = config(tmp_path)
    watcher, calls = watch(watchers, path)
    assert watcher.polling

    atomic_save(path, "version: '3'\npolled: true\n")
    await calls.next(timeout=5.0)
    watcher.stop()
    assert not set(threading.enumerate()) - before


async def test_a_save_that_raced_the_reload_is_reported_again(
    tmp_path: Path, watchers: list[ConfigWatcher]
) -> None:
    """The change reported was B; the reload read A (the file flipped back as it read), and
    the file ends as B: the watcher's own baseline says B is known, but the daemon says it
    read A (`loaded`), so B is reported again. What it read is known: nothing more."""
    a, b = "version: '3'\n", "version: '3'\nserver: {}\n"
    path = config(tmp_path, a)
    watcher, calls = watch(watchers, path)
    read_as_a = watcher.digest()
    atomic_save(path, b)
    await calls.next()
    assert watcher.digest() != read_as_a
    watcher.loaded(read_as_a)
    await calls.next()  # B again: the daemon runs A
    watcher.loaded(watcher.digest())
    await calls.none()
    watcher.loaded(None)  # the files changed while the reload read them: look again
    await calls.next()
    watcher.loaded(watcher.digest())
    await calls.none()
    assert calls.count == 3


def test_a_watchdog_without_attrib_events_is_watched_all_the_same() -> None:
    """watchdog 4 and 6 (Debian trixie's) have no FileAttribEvent; pyproject allows them."""
    probe = (
        "import watchdog.events, watchdog.observers, watchdog.observers.inotify\n"
        "del watchdog.events.FileAttribEvent  # as in watchdog 4 and 6, for rrd.watch\n"
        "import rrd.watch\n"
        "names = [e.__name__ for e in rrd.watch._EVENTS]\n"
        "assert 'FileModifiedEvent' in names and 'FileAttribEvent' not in names, names\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=30, cwd=ROOT)
