"""Waiting on conditions with deadlines: the machine has two noisy cores, so never a bare sleep."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ROOT / "tests" / "workers"


def worker_argv(name: str, *args: str) -> tuple[str, ...]:
    """argv that runs tests/workers/NAME.py with this interpreter."""
    return (sys.executable, str(WORKERS / f"{name}.py"), *args)


async def eventually(predicate: Callable[[], T], timeout: float = 10.0, step: float = 0.01) -> T:
    """Poll `predicate` on the loop until it returns something true, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(step)


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, step: float = 0.02) -> T:
    """The same for synchronous tests."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(step)


async def holds_for(predicate: Callable[[], object], seconds: float, step: float = 0.01) -> None:
    """`predicate` stays true, checked all along, for `seconds`: nothing wrongly under way
    shows up. Fails at the first moment it does not hold."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"stopped holding: {predicate}"
        await asyncio.sleep(step)
    assert predicate(), f"stopped holding: {predicate}"


def stays(predicate: Callable[[], object], seconds: float, step: float = 0.02) -> bool:
    """The same for synchronous tests, as a verdict: True when `predicate` held throughout."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(step)
    return bool(predicate())


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except ProcessLookupError:
        return False


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists, zombies left aside."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
