"""rrd.sdk against a tiny test server: real worker processes, frames checked against PHP's.

The test server is built from the codec alone: it spawns a program from tests/workers/ (or
examples/), writes frames to it and reads its replies with a Decoder under a deadline. The
`basic` and `error` captures of the real PHP library are the reference for every byte.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from rrd.protocol.control import (
    Payload,
    is_stop_request,
    parse_pid,
    payload_frame,
    pid_reply,
    pid_request,
    stop_request,
)
from rrd.protocol.frame import Decoder, Flag, Frame, Stream

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ROOT / "tests" / "workers"
ECHO = WORKERS / "sdk_echo.py"
TICKER = WORKERS / "sdk_ticker.py"
EXAMPLE = ROOT / "examples" / "ticker_app.py"
DEADLINE = 10.0
"""Seconds any one step may take; a passing step takes milliseconds."""

CONFORMANCE = ROOT / "tests" / "conformance"
"""Frames captured from the real PHP worker library (a copy of ../shared/conformance)."""


def conformance(name: str) -> list[Frame]:
    """The frames of one captured stream, e.g. `basic.from_worker`."""
    return Decoder().feed((CONFORMANCE / f"{name}.bin").read_bytes())


def with_pid(frame: Frame, pid: int) -> Frame:
    """A captured pid frame with the capture run's pid replaced by `pid`."""
    assert re.fullmatch(rb'\{"pid":\d+\}', frame.payload), frame
    return Frame(b'{"pid":%d}' % pid, frame.flags, frame.options, frame.stream, frame.version)


def exec_frame(body: bytes, context: bytes = b"") -> Frame:
    return payload_frame(Payload(body, context), Flag.CODEC_RAW)


class TestServer:
    """The server's end of one worker process."""

    __test__ = False

    def __init__(
        self, proc: subprocess.Popen[bytes], stderr_path: Path, conn: socket.socket | None
    ) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.conn = conn
        self.decoder = Decoder()
        self.frames: deque[Frame] = deque()
        self.eof = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def send(self, *frames: Frame) -> None:
        self.send_raw(b"".join(frame.encode() for frame in frames))

    def send_raw(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.sendall(data)
        else:
            stdin = self._stdin()
            stdin.write(data)
            stdin.flush()

    def close_relay(self) -> None:
        """EOF for the worker: the server closed its end."""
        if self.conn is not None:
            self.conn.shutdown(socket.SHUT_WR)
        else:
            self._stdin().close()

    def handshake(self) -> Frame:
        self.send(pid_request(os.getpid()))
        reply = self.read_frame()
        assert parse_pid(reply) == self.pid
        return reply

    def read_frame(self, timeout: float = DEADLINE) -> Frame:
        deadline = time.monotonic() + timeout
        while not self.frames:
            if self.eof or not self._fill(deadline):
                raise AssertionError(
                    f"worker closed the relay instead of answering "
                    f"(exit {self.proc.poll()}); stderr:\n{self.stderr()}"
                )
        return self.frames.popleft()

    def expect_eof(self, timeout: float = DEADLINE) -> None:
        """The worker closes the relay without writing anything more."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._fill(deadline)
        assert not self.frames, f"unexpected frames before EOF: {list(self.frames)}"
        assert not self.decoder.pending, "relay closed inside a frame"

    def wait(self, timeout: float = DEADLINE) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        if self.conn is not None:
            self.conn.close()

    def _stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def _fill(self, deadline: float) -> bool:
        """Read what the worker wrote; False at EOF; TimeoutError past the deadline."""
        if self.conn is not None:
            fd = self.conn.fileno()
        else:
            assert self.proc.stdout is not None
            fd = self.proc.stdout.fileno()
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(remaining, 0))
        if not ready:
            raise TimeoutError(f"no reply from the worker in time; stderr:\n{self.stderr()}")
        chunk = os.read(fd, 65536)
        if not chunk:
            self.eof = True
            return False
        self.frames.extend(self.decoder.feed(chunk))
        return True


Spawn = Callable[..., TestServer]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start a worker program as rrd would; every one is killed when the test ends."""
    servers: list[TestServer] = []

    def start(
        script: Path,
        *,
        mode: str | None = None,
        relay: str = "pipes",
        extra_env: dict[str, str] | None = None,
    ) -> TestServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RR_")}
        listener = None
        if relay == "unix":
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            path = tmp_path / f"relay{len(servers)}.sock"
            listener.bind(str(path))
            relay = f"unix://{path}"
        elif relay == "tcp":
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            relay = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        env["RR_RELAY"] = relay
        if mode is not None:
            env["RR_MODE"] = mode
        env.update(extra_env or {})
        stderr_path = tmp_path / f"stderr{len(servers)}.log"
        conn = None
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(script)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=ROOT,
            )
        try:
            if listener is not None:
                listener.listen(1)
                listener.settimeout(DEADLINE)
                conn, _ = listener.accept()
                conn.settimeout(None)
        finally:
            if listener is not None:
                listener.close()
            server = TestServer(proc, stderr_path, conn)
            servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_handshake_answers_own_pid_with_control_flag_like_php(spawn: Spawn) -> None:
    server = spawn(ECHO)
    reply = server.handshake()
    php = conformance("basic.from_worker")[0]
    assert reply == with_pid(php, server.pid)
    assert reply.encode() == pid_reply(server.pid).encode()
    server.send(stop_request())
    server.expect_eof()
    assert server.wait() == 0


def test_basic_exchange_matches_php_frame_by_frame(spawn: Spawn) -> None:
    server = spawn(ECHO)
    sent = conformance("basic.to_worker")
    expected = conformance("basic.from_worker")
    expected[0] = with_pid(expected[0], server.pid)
    replies = []
    for frame in sent:
        server.send(frame)
        if is_stop_request(frame):
            server.expect_eof()
        else:
            replies.append(server.read_frame())
    assert replies == expected
    assert b"".join(f.encode() for f in replies) == b"".join(f.encode() for f in expected)
    assert server.wait() == 0
    assert server.stderr() == ""


def test_basic_exchange_sent_in_one_write(spawn: Spawn) -> None:
    server = spawn(ECHO)
    sent = conformance("basic.to_worker")
    expected = conformance("basic.from_worker")
    expected[0] = with_pid(expected[0], server.pid)
    server.send(*sent)
    assert [server.read_frame() for _ in expected] == expected
    server.expect_eof()
    assert server.wait() == 0


def test_error_exchange_matches_php(spawn: Spawn) -> None:
    server = spawn(ECHO)
    sent = conformance("error.to_worker")
    expected = conformance("error.from_worker")
    expected[0] = with_pid(expected[0], server.pid)
    *answered, throw = sent
    assert throw.payload == b"THROW"
    replies = []
    for frame in answered:
        server.send(frame)
        replies.append(server.read_frame())
    assert replies == expected
    assert replies[1] == Frame(b"something failed", Flag.ERROR)
    assert "stray print from ECHO\nstray sys.stdout.write\n" in server.stderr()
    server.send(throw)
    server.expect_eof()
    assert server.wait() != 0
    assert "RuntimeError: thrown by the worker" in server.stderr()


def test_fd_level_and_child_process_output_goes_to_stderr(spawn: Spawn) -> None:
    server = spawn(ECHO)
    server.handshake()
    server.send(exec_frame(b"FDECHO", b"ctx"))
    assert server.read_frame() == payload_frame(Payload(b"fd-echoed", b"ctx"))
    stderr = server.stderr()
    assert "stray os.write to fd 1" in stderr
    # The child read /dev/null, not the relay: stdin is no longer the server's pipe.
    assert "child stdout, read 0 bytes of stdin" in stderr
    server.send(exec_frame(b"still clean"))
    assert server.read_frame() == payload_frame(Payload(b"OK:still clean"))


def test_environment_is_exposed(spawn: Spawn) -> None:
    server = spawn(
        WORKERS / "sdk_env.py", mode="jobs", extra_env={"RR_RPC": "tcp://127.0.0.1:6001"}
    )
    server.handshake()
    server.send(exec_frame(b""))
    reply = server.read_frame()
    assert json.loads(reply.payload) == {"mode": "jobs", "rpc": "tcp://127.0.0.1:6001"}
    server.close_relay()
    server.expect_eof()
    assert server.wait() == 0


def test_repeated_pid_request_is_answered_again(spawn: Spawn) -> None:
    server = spawn(ECHO)
    first = server.handshake()
    assert server.handshake() == first
    server.send(exec_frame(b"x"))
    assert server.read_frame() == payload_frame(Payload(b"OK:x"))
    assert server.handshake() == first


def test_ping_is_answered_with_pong_and_stream_stop_and_pong_are_skipped(spawn: Spawn) -> None:
    server = spawn(ECHO)
    server.handshake()
    server.send(Frame(stream=Stream.PING))
    pong = server.read_frame()
    assert pong == Frame(stream=Stream.PONG)
    assert pong.encode()[:12].hex(" ").endswith("08 00")
    server.send(
        Frame(stream=Stream.PONG),
        Frame(b"", options=(0,), stream=Stream.STOP),
        Frame(b"ignored", options=(0,), stream=Stream.PONG),
        exec_frame(b"after-skip"),
    )
    assert server.read_frame() == payload_frame(Payload(b"OK:after-skip"))
    ping_with_data = Frame(b"ping", options=(0,), stream=Stream.PING)
    server.send(ping_with_data)
    assert server.read_frame() == Frame(stream=Stream.PONG)
    assert server.read_frame() == payload_frame(Payload(b"OK:ping"))


def test_stop_frame_exits_zero(spawn: Spawn) -> None:
    server = spawn(ECHO)
    server.handshake()
    server.send(stop_request())
    server.expect_eof()
    assert server.wait() == 0
    assert server.stderr() == ""


@pytest.mark.parametrize("handshake", [True, False], ids=["after-handshake", "before"])
def test_eof_on_stdin_exits_zero(spawn: Spawn, handshake: bool) -> None:
    server = spawn(ECHO)
    if handshake:
        server.handshake()
    server.close_relay()
    server.expect_eof()
    assert server.wait() == 0
    assert server.stderr() == ""


def test_exec_before_handshake_is_served(spawn: Spawn) -> None:
    server = spawn(ECHO)
    server.send(exec_frame(b"first", b"c"))
    assert server.read_frame() == payload_frame(Payload(b"OK:first", b"c"))


BAD_CRC = bytes.fromhex("14 04 08 00 00 00 ee d1 1c c7 00 00") + b"\x02\x00\x00\x00cxbadcrc"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(BAD_CRC, "bad frame header CRC", id="bad-crc"),
        pytest.param(Frame(b"xx", options=(0,), version=2).encode(), "version", id="version"),
        pytest.param(Frame(b'{"foo":1}', Flag.CONTROL).encode(), "unknown control", id="ctl"),
        pytest.param(Frame(b'{"pid":0}', Flag.CONTROL).encode(), "no positive pid", id="pid0"),
        pytest.param(Frame(b"nope", Flag.CONTROL).encode(), "not a JSON object", id="notjson"),
        pytest.param(Frame(b"noopts").encode(), "exactly 1 option", id="no-options"),
        pytest.param(Frame(b"xx", options=(5,)).encode(), "exceeds the payload", id="ctx-long"),
        pytest.param(exec_frame(b"truncated").encode()[:-3], "inside a frame", id="truncated"),
        pytest.param(b"\x14\x00\x00", "inside a frame", id="short-header"),
    ],
)
def test_bad_frames_crash_the_worker(spawn: Spawn, data: bytes, message: str) -> None:
    server = spawn(ECHO)
    server.handshake()
    server.send_raw(data)
    server.close_relay()
    server.expect_eof()
    assert server.wait() != 0
    stderr = server.stderr()
    assert "FrameError" in stderr
    assert message in stderr


def test_ticker_dispatcher_serves_ticks_and_reports_failures(spawn: Spawn) -> None:
    server = spawn(TICKER, mode="ticker")
    server.handshake()
    ok = payload_frame(Payload())

    def tick(body: bytes, context: bytes = b'{"lastTick": 1700000000}') -> Frame:
        server.send(payload_frame(Payload(body, context)))
        return server.read_frame()

    assert tick(b'{"tick": 1}', b'{"lastTick": 0}') == ok
    assert tick(b'{"tick":2}') == ok
    assert tick(b'{"tick": 3}') == Frame(b"ValueError: tick 3 is unlucky", Flag.ERROR)
    assert tick(b"not json").flags == Flag.ERROR
    assert tick(b"not json").payload.startswith(b"JSONDecodeError: ")
    assert tick(b'{"tick": 6}', b"") == Frame(
        b"ValueError: ticker payload context has no integer 'lastTick'", Flag.ERROR
    )
    assert tick(b'{"tick": 7}') == ok
    server.send(stop_request())
    server.expect_eof()
    assert server.wait() == 0
    lines = server.stderr().splitlines()
    assert lines.count("finalized") == 7
    assert "handled tick=1 lastTick=0" in lines
    assert "handled tick=2 lastTick=1700000000" in lines
    assert "handled tick=7 lastTick=1700000000" in lines


def test_example_ticker_app_logs_each_tick(spawn: Spawn) -> None:
    assert os.access(EXAMPLE, os.X_OK)
    assert EXAMPLE.read_text().startswith("#!/usr/bin/env python3\n")
    server = spawn(EXAMPLE, mode="ticker")
    server.handshake()
    for n in (1, 2):
        server.send(payload_frame(Payload(b'{"tick": %d}' % n, b'{"lastTick": 1700000000}')))
        assert server.read_frame() == payload_frame(Payload())
    server.send(stop_request())
    server.expect_eof()
    assert server.wait() == 0
    assert server.stderr().splitlines() == [
        f"tick 1 lastTick 1700000000 pid {server.pid}",
        f"tick 2 lastTick 1700000000 pid {server.pid}",
    ]


@pytest.mark.parametrize(("mode", "said"), [("http", "RR_MODE='http'"), (None, "not set")])
def test_kernel_without_a_dispatcher_for_the_mode_exits_1(
    spawn: Spawn, mode: str | None, said: str
) -> None:
    server = spawn(TICKER, mode=mode)
    server.expect_eof()
    assert server.wait() == 1
    lines = server.stderr().splitlines()
    assert len(lines) == 1
    assert "no dispatcher" in lines[0]
    assert said in lines[0]


@pytest.mark.parametrize("relay", ["unix", "tcp"])
def test_socket_relay(spawn: Spawn, relay: str) -> None:
    server = spawn(ECHO, relay=relay)
    server.handshake()
    server.send(exec_frame(b"over a socket", b"{}"))
    assert server.read_frame() == payload_frame(Payload(b"OK:over a socket", b"{}"))
    server.send(exec_frame(b"ECHO"))
    assert server.read_frame() == payload_frame(Payload(b"echoed"))
    server.send(stop_request())
    server.expect_eof()
    assert server.wait() == 0
    assert server.proc.stdout is not None
    assert server.proc.stdout.read() == b""
    assert "stray print from ECHO" in server.stderr()


def test_unknown_relay_fails_with_a_message(spawn: Spawn) -> None:
    server = spawn(ECHO, relay="ftp://nowhere")
    server.expect_eof()
    assert server.wait() != 0
    assert "RR_RELAY: unknown relay 'ftp://nowhere'" in server.stderr()


def test_import_stays_light() -> None:
    # dataclasses (with inspect) and socket cost a worker ~12 ms of start-up: a crash's recovery
    heavy = ("click", "yaml", "watchdog", "psutil", "asyncio", "dataclasses", "inspect", "socket")
    code = f"import sys, rrd.sdk; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE, check=True
    )
    assert out.stdout.strip() == "[]"
