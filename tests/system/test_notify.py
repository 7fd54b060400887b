"""rrd serve speaking sd_notify to a fake systemd: an abstract unix datagram socket."""

from __future__ import annotations

import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.system.conftest import config
from tests.system.test_reload import save


class FakeSystemd:
    """Receives rrd's notifications on an abstract socket, each as a dict, in order."""

    def __init__(self) -> None:
        self.name = f"rrd-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def received(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode("utf-8").splitlines())
            self.messages.append(fields)

    def wait_for(self, key: str, count: int = 1) -> list[dict[str, str]]:
        return wait_until(
            lambda: len(found := [m for m in self.received() if key in m]) >= count and found,
            timeout=15,
        )


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd()
    yield fake
    fake.sock.close()


def kinds(messages: list[dict[str, str]]) -> list[str]:
    """The order of what was said, WATCHDOG pings left aside."""
    said = []
    for message in messages:
        for key in ("READY", "RELOADING", "STOPPING"):
            if key in message:
                said.append(key)
    return said


def test_systemd_hears_ready_reloading_stopping_and_watchdog_in_order(
    rrd: Any, systemd: FakeSystemd, tmp_path: Path
) -> None:
    env = {
        "NOTIFY_SOCKET": "@" + systemd.name,
        "WATCHDOG_USEC": "400000",
        "TICK_LOG": str(tmp_path / "ticks"),
    }
    daemon = rrd(config(interval="100ms", workers=2), env=env)
    (ready,) = systemd.wait_for("READY")
    assert ready["STATUS"].startswith("ticker: 2/2 workers")
    systemd.wait_for("WATCHDOG", count=2)  # every 0.2 s

    signalled = time.monotonic_ns() // 1000
    daemon.signal(signal.SIGHUP)
    (reloading,) = systemd.wait_for("RELOADING")
    assert signalled < int(reloading["MONOTONIC_USEC"]) < time.monotonic_ns() // 1000
    systemd.wait_for("READY", count=2)

    save(tmp_path / ".rr.yaml", config(interval="50ms", workers=2))
    systemd.wait_for("RELOADING", count=2)  # a saved file speaks as SIGHUP does
    systemd.wait_for("READY", count=3)

    save(tmp_path / ".rr.yaml", config(interval="soon", workers=2))
    readies = systemd.wait_for("READY", count=4)
    assert "config rejected" in readies[-1]["STATUS"]

    pings = len([m for m in systemd.received() if "WATCHDOG" in m])
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0
    systemd.wait_for("STOPPING")
    said = kinds(systemd.received())
    assert said == [
        "READY",
        "RELOADING",
        "READY",
        "RELOADING",
        "READY",
        "RELOADING",
        "READY",
        "STOPPING",
    ]
    assert pings >= 2


def test_without_notify_socket_rrd_runs_the_same(rrd: Any, tmp_path: Path) -> None:
    daemon = rrd(config(), env={"TICK_LOG": str(tmp_path / "ticks")})
    daemon.wait_event("daemon.ready")
    assert daemon.stop() == 0
