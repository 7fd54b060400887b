"""The worker's side of the relay: the Python counterpart of spiral/roadrunner-worker's Worker.

Room: sdk. Imports only `rrd.protocol`, `rrd.errors` and the standard library: a worker must
start fast.

On the wire it does what the PHP library (v3) does: it answers every pid request with its own
pid (flags CONTROL), skips frames marked stream-STOP or PONG, leaves its loop on the server's
`{"stop":true}`, answers each payload with a data frame (flags 0, one option: the context
length), reports a soft error with an ERROR frame and asks to be retired with `{"stop":true}`
as the reply's context. Where PHP is lenient or dies, it is strict or calm: a bad frame
(wrong CRC, version, options) raises FrameError, and EOF between frames ends the loop cleanly.
"""

from __future__ import annotations

import contextlib
import os
import sys

from rrd.errors import FrameError
from rrd.protocol.control import (
    Payload,
    is_stop_request,
    parse_control,
    parse_pid,
    payload_frame,
    pid_reply,
    retire_reply,
    split_payload,
)
from rrd.protocol.frame import Flag, Frame, Stream, preview
from rrd.sdk.relay import PipeRelay, Relay, SocketRelay

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every worker ~4 ms of its start: for the checker only
    from collections.abc import Iterator, Mapping
    from typing import Self

PONG = Frame(stream=Stream.PONG)
_DATA = Flag.NONE
_PLAIN = Stream.NONE
_CONTROL_JSON = Flag.CONTROL | Flag.CODEC_JSON
"""Flag members are singletons: a frame's flags are checked by identity on the hot path,
where an IntFlag `&` costs ~0.5 us (enum.py, in Python)."""

_stdio_taken = False


class Worker:
    """One worker process's connection to the server: wait for payloads, answer each one."""

    def __init__(self, relay: Relay, *, mode: str = "", rpc_address: str | None = None) -> None:
        self.relay = relay
        self.mode = mode
        self.rpc_address = rpc_address
        self._pid_request = b""
        self._pid_reply = b""
        """The last pid request seen, and the encoded answer to it: the server sends the same
        one behind every payload."""

    @classmethod
    def create(cls, env: Mapping[str, str] | None = None, *, intercept_stdout: bool = True) -> Self:
        """Connect as the environment says (RR_RELAY, RR_MODE, RR_RPC; default os.environ).

        With `intercept_stdout` (the default, as in PHP), whatever the program writes to
        stdout from then on, at the fd level too, goes to stderr instead of the relay.
        """
        if env is None:
            env = os.environ
        address = env.get("RR_RELAY") or "pipes"
        relay: Relay = _stdio_relay() if address == "pipes" else SocketRelay.connect(address)
        if intercept_stdout:
            _stdout_to_stderr()
        return cls(relay, mode=env.get("RR_MODE", ""), rpc_address=env.get("RR_RPC") or None)

    def wait_payload(self) -> Payload | None:
        """The next payload to serve; None when the server says stop or closes the relay."""
        while True:
            frame = self.relay.read_frame()
            if frame is None:
                return None
            if frame.flags is _DATA and frame.stream is _PLAIN:
                return split_payload(frame)
            if frame.flags is _CONTROL_JSON and frame.payload == self._pid_request:
                self.relay.send(self._pid_reply)
                continue
            if frame.flags & Flag.CONTROL:
                if is_stop_request(frame):
                    return None
                self._answer_control(frame)
                continue
            if frame.stream & (Stream.STOP | Stream.PONG):
                continue
            if frame.stream & Stream.PING:
                self.relay.write_frame(PONG)
                if not frame.options:
                    continue
            return split_payload(frame)

    def __iter__(self) -> Iterator[Payload]:
        """Payloads until the server says stop."""
        while (payload := self.wait_payload()) is not None:
            yield payload

    def respond(self, payload: Payload) -> None:
        """Answer the current payload."""
        self.relay.send(payload_frame(payload).encode())

    def error(self, message: str) -> None:
        """Fail the current payload softly: the caller gets `message`, this worker is reused."""
        self.relay.write_frame(Frame(message.encode("utf-8", "replace"), Flag.ERROR))

    def retire(self) -> None:
        """Answer the current payload by asking to be retired; the server reruns it elsewhere.

        (PHP's library calls this `stop()`; here "stop" is only what the server does.)"""
        self.relay.write_frame(retire_reply())

    def close(self) -> None:
        """Close the relay."""
        self.relay.close()

    def _answer_control(self, frame: Frame) -> None:
        if "pid" not in parse_control(frame):
            raise FrameError(f"unknown control frame: {preview(frame.payload)}")
        parse_pid(frame)
        self._pid_request = frame.payload
        self._pid_reply = pid_reply(os.getpid()).encode()
        self.relay.send(self._pid_reply)


def _stdio_relay() -> PipeRelay:
    """Frames over private copies of fd 0 and 1; fd 0 itself becomes /dev/null.

    The copies are close-on-exec, so a child process neither inherits the relay nor keeps it
    open after this worker dies, and a stray read of stdin (input(), a subprocess) cannot eat
    the server's frames.
    """
    global _stdio_taken
    if _stdio_taken:
        # fd 0 is /dev/null by now: a second relay would read EOF and quietly end its loop.
        raise RuntimeError("Worker.create() already took this process's stdin/stdout relay")
    _stdio_taken = True
    relay = PipeRelay(os.dup(0), os.dup(1))
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(devnull, 0)
    finally:
        os.close(devnull)
    return relay


def _stdout_to_stderr() -> None:
    """Point fd 1 and sys.stdout at stderr so that nothing printed can corrupt the relay."""
    target_fd = 2
    try:
        os.dup2(2, 1)
    except OSError:
        # No stderr at all: stray output is dropped rather than sent anywhere near the relay.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        target_fd = 1
    old = sys.stdout
    if old is not None:
        # Text printed before create() and still buffered now lands on stderr too.
        with contextlib.suppress(OSError, ValueError):
            old.flush()
    encoding = getattr(old, "encoding", None) or "utf-8"
    sys.stdout = open(  # noqa: SIM115 - lives as long as the process
        target_fd, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False
    )
