"""The control socket's server under hostile bytes and crowds: random, mutated, truncated and
oversized frames, a client sending one byte at a time, 200 clients at once and idle hogs.
Every other client is still served, nothing hangs, and the loop never blocks (a ticker on the
server's loop measures its lag)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import socket
import threading
import time
import zlib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rrd.control.server import ControlServer
from rrd.protocol.frame import Decoder, Flag, Frame
from rrd.protocol.rpc import RpcError, decode_reply, encode_request, parse_reply

T = TypeVar("T")


async def _status(params: Any) -> dict[str, int]:
    return {"pid": os.getpid()}


async def _echo(params: Any) -> Any:
    return params


METHODS = {"rrd.Status": _status, "rrd.Echo": _echo}


class Served:
    """A ControlServer on a loop of its own thread, with a ticker measuring the loop's lag."""

    def __init__(self, path: Path, **knobs: Any) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.lags: list[float] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = ControlServer(f"unix://{path}", METHODS, **knobs)
        self.run(self.server.start())
        self._ticker = asyncio.run_coroutine_threadsafe(self._tick(), self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _tick(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(0.005)
            self.lags.append(time.monotonic() - began - 0.005)

    def p99_lag(self) -> float:
        lags = sorted(self.lags)
        return lags[int(len(lags) * 0.99)] if lags else 0.0

    def close(self) -> None:
        self._ticker.cancel()
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def connect(self) -> socket.socket:
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(self.path))  # blocking: waits out a full backlog
        client.settimeout(5)
        return client


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """`served(**knobs)` starts a server; every one is closed at the end."""
    started: list[Served] = []

    def start(**knobs: Any) -> Served:
        server = Served(tmp_path / f"ctl{len(started)}.sock", **knobs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for every example of the hypothesis tests."""
    server = Served(tmp_path_factory.mktemp("fuzz") / "ctl.sock", frame_timeout=1.0)
    yield server
    assert server.p99_lag() < 0.05, f"the loop lagged: p99 {server.p99_lag() * 1000:.1f} ms"
    server.close()


def replies(client: socket.socket, timeout: float = 5.0) -> list[Frame]:
    """Every frame until the server closes the connection (a hang fails the test)."""
    client.settimeout(timeout)
    decoder, frames = Decoder(), []
    while True:
        chunk = client.recv(65536)
        if not chunk:
            return frames
        frames += decoder.feed(chunk)


def one_reply(client: socket.socket) -> Frame:
    decoder = Decoder()
    while True:
        chunk = client.recv(65536)
        assert chunk, "the server closed without a reply"
        if frames := decoder.feed(chunk):
            return frames[0]


def still_served(server: Served) -> None:
    with server.connect() as client:
        client.sendall(encode_request(9, "rrd.Status", None).encode())
        assert decode_reply(one_reply(client), seq=9) == {"pid": os.getpid()}


def error_text(frame: Frame) -> str:
    with pytest.raises(RpcError) as caught:
        parse_reply(frame)
    return caught.value.message


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(garbage=st.binary(max_size=3000))
def test_random_bytes_get_errors_or_nothing_never_a_hang(shared: Served, garbage: bytes) -> None:
    with shared.connect() as client:
        client.sendall(garbage)
        client.shutdown(socket.SHUT_WR)
        for frame in replies(client):
            assert frame.flags & Flag.ERROR
    still_served(shared)


GOOD = encode_request(5, "rrd.Echo", {"plugins": ["ticker"], "n": 1}).encode()


@FUZZ
@given(
    flips=st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(1, 255)), max_size=4),
    cut=st.integers(0, len(GOOD)),
    tail=st.binary(max_size=40),
)
def test_mutated_calls_get_a_reply_or_an_error_never_a_hang(
    shared: Served, flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(GOOD)
    for position, xor in flips:
        data[position] ^= xor
    data = data[:cut] + tail
    with shared.connect() as client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        frames = replies(client)
    if bytes(data).startswith(GOOD):
        assert decode_reply(frames[0], seq=5) == {"plugins": ["ticker"], "n": 1}
    for frame in frames[1:] if bytes(data).startswith(GOOD) else frames:
        if not frame.flags & Flag.ERROR:
            parse_reply(frame)  # a mutation that still makes a valid call gets a real reply
    still_served(shared)


def test_oversized_frames_are_refused_at_their_header(served: Any) -> None:
    server = served(max_request=4096)
    huge = encode_request(1, "rrd.Echo", "x" * 5000).encode()
    promise_4gib = bytearray(encode_request(1, "rrd.Echo", None).encode()[:12])
    with server.connect() as client:
        client.sendall(huge[:12])  # the header alone says it is too long
        (frame,) = replies(client)
        assert "exceeds the limit of 4096" in error_text(frame)
    with server.connect() as client:
        promise_4gib[2:6] = (0xFFFFFFFF).to_bytes(4, "little")
        promise_4gib[6:10] = zlib.crc32(bytes(promise_4gib[:6])).to_bytes(4, "little")
        client.sendall(bytes(promise_4gib))
        (frame,) = replies(client)
        assert "exceeds the limit" in error_text(frame)
    still_served(server)


def test_a_call_that_stops_halfway_is_cut_off_in_time(served: Any) -> None:
    server = served(frame_timeout=0.5)
    with server.connect() as client:
        client.sendall(encode_request(1, "rrd.Status", None).encode()[:15])
        began = time.monotonic()
        (frame,) = replies(client)
        assert "must arrive whole within 0.5s" in error_text(frame)
        assert time.monotonic() - began < 4
    still_served(server)


def test_one_byte_at_a_time_is_cut_off_while_others_are_served(served: Any) -> None:
    server = served(frame_timeout=1.0)
    call = encode_request(1, "rrd.Status", None).encode()
    outcome: list[str] = []

    def trickle() -> None:
        with server.connect() as client:
            try:
                for byte in call:
                    client.sendall(bytes([byte]))
                    time.sleep(0.1)
            except OSError:
                pass  # cut off: the server closed the connection
            outcome.extend(error_text(frame) for frame in replies(client))

    slow = threading.Thread(target=trickle)
    slow.start()
    served_while = 0
    while slow.is_alive():
        began = time.monotonic()
        still_served(server)
        assert time.monotonic() - began < 1.0
        served_while += 1
    slow.join()
    assert outcome == ["a call must arrive whole within 1s"]
    assert served_while >= 5
    assert server.p99_lag() < 0.05


def test_200_clients_at_once_are_all_served_and_the_loop_never_blocks(served: Any) -> None:
    server = served()
    clients = []
    selector = selectors.DefaultSelector()
    decoders = {}
    for n in range(200):  # each calls as it connects: an idle one would give way to the line
        client = server.connect()
        clients.append(client)
        client.sendall(encode_request(n, "rrd.Echo", n).encode())
        client.setblocking(False)
        selector.register(client, selectors.EVENT_READ, n)
        decoders[n] = Decoder()
    answers: dict[int, Any] = {}
    deadline = time.monotonic() + 15
    while len(answers) < 200 and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            n = key.data
            chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
            frames = decoders[n].feed(chunk) if chunk else []
            if frames or not chunk:
                selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
                answers[n] = decode_reply(frames[0], seq=n) if frames else None
    for client in clients:
        client.close()
    assert answers == {n: n for n in range(200)}
    assert server.p99_lag() < 0.05, f"p99 loop lag {server.p99_lag() * 1000:.1f} ms"


def test_idle_hogs_give_their_slots_to_a_client_with_a_call(served: Any) -> None:
    server = served(max_clients=8, evict_after=0.2, frame_timeout=5.0)
    hogs = [server.connect() for _ in range(40)]  # 8 served, 24 in line, 8 told to go
    began = time.monotonic()
    while True:  # an operator's retry: the line moves as idle hogs give way
        with server.connect() as client:
            with contextlib.suppress(BrokenPipeError):  # told to go before it asked: read why
                client.sendall(encode_request(9, "rrd.Status", None).encode())
            reply = one_reply(client)
        if not reply.flags & Flag.ERROR:
            break
        assert "control clients already" in error_text(reply)
        assert time.monotonic() - began < 5
        time.sleep(0.05)
    assert decode_reply(reply, seq=9) == {"pid": os.getpid()}
    told = []
    for hog in hogs:
        hog.settimeout(0.01)
        with contextlib.suppress(TimeoutError, BlockingIOError):
            told += [error_text(f) for f in Decoder().feed(hog.recv(65536))]
        hog.close()
    assert any("control clients already" in text for text in told)  # beyond the line: told so
    assert any("idle while other control clients wait" in text for text in told)
    assert all("already" in text or "idle" in text for text in told)
    still_served(server)
    assert server.p99_lag() < 0.05
