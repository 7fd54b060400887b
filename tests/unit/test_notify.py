"""rrd.notify against real unix datagram sockets standing in for systemd's notify socket."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rrd.notify import STATUS_MAX, Notifier

SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "SYSTEMD_EXEC_PID")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run under systemd too: its variables must not leak into them."""
    for name in SYSTEMD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def receiver_at(address: str | bytes) -> socket.socket:
    """A bound datagram socket, non-blocking so that `received` never waits."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """systemd's side on an abstract address, named in NOTIFY_SOCKET with `@`."""
    name = f"rrd-test-{secrets.token_hex(8)}"
    sock = receiver_at(f"\0{name}")
    monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
    yield sock
    sock.close()


@pytest.fixture
def notifier(receiver: socket.socket) -> Iterator[Notifier]:
    notifier = Notifier.from_environ()
    assert notifier.enabled, notifier.last_error
    yield notifier
    notifier.close()


def received(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued; sends on a unix socket are queued before they return."""
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(65536))
        except BlockingIOError:
            return datagrams


def monotonic_usec(datagram: bytes) -> int:
    lines = datagram.split(b"\n")
    assert lines[0] == b"RELOADING=1"
    key, _, value = lines[1].partition(b"=")
    assert key == b"MONOTONIC_USEC"
    return int(value)


def test_ready_with_status_is_one_datagram(notifier: Notifier, receiver: socket.socket) -> None:
    notifier.ready("serving 2 workers")
    notifier.ready()
    assert received(receiver) == [b"READY=1\nSTATUS=serving 2 workers", b"READY=1"]
    assert notifier.errors == 0
    assert notifier.last_error is None


def test_a_path_socket_works_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    sock = receiver_at(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    notifier = Notifier.from_environ()
    notifier.ready("up")
    assert received(sock) == [b"READY=1\nSTATUS=up"]
    notifier.close()
    sock.close()


def test_reloading_sends_monotonic_usec_in_the_same_datagram(
    notifier: Notifier, receiver: socket.socket
) -> None:
    before = time.monotonic_ns() // 1000
    notifier.reloading("reloading rrd.yaml")
    after = time.monotonic_ns() // 1000
    [first] = received(receiver)
    assert before <= monotonic_usec(first) <= after
    assert first.split(b"\n")[2:] == [b"STATUS=reloading rrd.yaml"]

    while time.monotonic_ns() // 1000 <= monotonic_usec(first):
        pass  # let one microsecond pass, without sleeping
    notifier.reloading()
    [second] = received(receiver)
    assert monotonic_usec(second) > monotonic_usec(first)
    assert len(second.split(b"\n")) == 2


def test_status_arrives_as_utf8(notifier: Notifier, receiver: socket.socket) -> None:
    # sdnotify's own notify() encodes latin-1: it would mangle é and drop this message (✓).
    notifier.status("é ✓")
    assert received(receiver) == ["STATUS=é ✓".encode()]


def test_a_multi_line_status_is_one_line(notifier: Notifier, receiver: socket.socket) -> None:
    notifier.status("rrd.yaml:3: bad\r\nkept the old config\nREADY=1")
    notifier.ready("nul\0byte")
    assert received(receiver) == [
        b"STATUS=rrd.yaml:3: bad kept the old config READY=1",
        b"READY=1\nSTATUS=nul byte",
    ]


def test_a_long_status_is_truncated(notifier: Notifier, receiver: socket.socket) -> None:
    notifier.status("x" * 10_000)
    assert received(receiver) == [b"STATUS=" + b"x" * STATUS_MAX]


def test_stopping(notifier: Notifier, receiver: socket.socket) -> None:
    notifier.stopping("stopping 4 workers")
    notifier.stopping()
    assert received(receiver) == [b"STOPPING=1\nSTATUS=stopping 4 workers", b"STOPPING=1"]


def test_extend_timeout_in_microseconds(notifier: Notifier, receiver: socket.socket) -> None:
    notifier.extend_timeout(12.5)
    notifier.extend_timeout(-1)
    assert received(receiver) == [b"EXTEND_TIMEOUT_USEC=12500000", b"EXTEND_TIMEOUT_USEC=0"]


def test_watchdog(notifier: Notifier, receiver: socket.socket) -> None:
    notifier.watchdog()
    assert received(receiver) == [b"WATCHDOG=1"]


def test_send_upper_cases_keys_in_the_given_order(
    notifier: Notifier, receiver: socket.socket
) -> None:
    assert notifier.send(status="custom", errno=5, ready=1)
    assert not notifier.send()
    assert received(receiver) == [b"STATUS=custom\nERRNO=5\nREADY=1"]


@pytest.mark.parametrize(
    ("exec_pid", "sent"),
    [
        (None, []),
        (str(os.getpid()), []),
        (str(os.getppid()), [f"MAINPID={os.getpid()}".encode()]),
        ("garbage", []),
    ],
)
def test_main_pid_only_when_a_wrapper_started_rrd(
    receiver: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    exec_pid: str | None,
    sent: list[bytes],
) -> None:
    if exec_pid is not None:
        monkeypatch.setenv("SYSTEMD_EXEC_PID", exec_pid)
    notifier = Notifier.from_environ()
    notifier.main_pid()
    assert received(receiver) == sent
    notifier.close()


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "3000000"}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getppid())}, None),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid(
    environ: dict[str, str], interval: float | None
) -> None:
    assert Notifier.from_environ(environ).watchdog_interval == interval


def test_from_environ_reads_os_environ_and_changes_nothing(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("SYSTEMD_EXEC_PID", str(os.getppid()))
    before = dict(os.environ)
    notifier = Notifier.from_environ()
    assert dict(os.environ) == before
    assert notifier.watchdog_interval == 0.5
    notifier.main_pid()
    assert received(receiver) == [f"MAINPID={os.getpid()}".encode()]
    notifier.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    for notifier in (Notifier.from_environ(), Notifier.from_environ({}), Notifier()):
        assert not notifier.enabled
        assert not notifier.send(READY=1)
        notifier.ready("up")
        notifier.reloading("again")
        notifier.stopping("bye")
        notifier.extend_timeout(5)
        notifier.status("hello")
        notifier.watchdog()
        notifier.main_pid()
        notifier.close()
        assert (notifier.errors, notifier.last_error) == (0, None)


def test_a_full_queue_never_blocks_and_counts_drops(
    notifier: Notifier, receiver: socket.socket
) -> None:
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sent = 0
    while notifier.send(STATUS="x" * 512):  # blocking here would hang the test
        sent += 1
        assert sent < 100_000, "the queue never filled"
    assert notifier.errors == 1
    assert notifier.last_error == "STATUS: Resource temporarily unavailable"

    notifier.watchdog()
    assert notifier.errors == 2
    assert notifier.last_error == "WATCHDOG: Resource temporarily unavailable"

    assert len(received(receiver)) == sent
    notifier.watchdog()
    assert received(receiver) == [b"WATCHDOG=1"]
    assert notifier.errors == 2


def test_a_vanished_receiver_is_counted_not_raised(
    notifier: Notifier, receiver: socket.socket
) -> None:
    receiver.close()
    notifier.ready("up")
    assert notifier.errors == 1
    assert notifier.last_error == "READY, STATUS: Connection refused"


def nowhere(tmp_path: Path) -> list[tuple[str, str]]:
    regular = tmp_path / "file"
    regular.write_text("not a socket")
    return [
        (str(tmp_path / "missing"), "No such file or directory"),
        (str(regular), "Connection refused"),
        (f"@rrd-test-{secrets.token_hex(8)}", "Connection refused"),
    ]


@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")  # sdnotify leaks it
def test_a_notify_socket_pointing_nowhere_disables_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for address, why in nowhere(tmp_path):
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        notifier = Notifier.from_environ()
        assert not notifier.enabled
        assert notifier.last_error == f"NOTIFY_SOCKET={address}: {why}"
        notifier.ready()
        assert notifier.errors == 0


def test_an_empty_notify_socket_disables_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    notifier = Notifier.from_environ()
    assert not notifier.enabled
    assert notifier.last_error == "NOTIFY_SOCKET is empty"


def test_a_mapping_that_disagrees_with_os_environ_disables(receiver: socket.socket) -> None:
    # sdnotify reads only os.environ: connecting elsewhere would silently ignore the mapping.
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@somewhere-else"})
    assert not notifier.enabled
    assert notifier.last_error is not None
    assert "os.environ" in notifier.last_error
    assert received(receiver) == []


def test_close_stops_sending(notifier: Notifier, receiver: socket.socket) -> None:
    notifier.close()
    notifier.close()
    assert not notifier.enabled
    assert not notifier.send(READY=1)
    assert received(receiver) == []
