"""Byte streams a worker speaks frames over: its stdin/stdout pipes, or a socket to the server.

Room: sdk. Imports only `rrd.protocol`, `rrd.errors` and the standard library.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections import deque

from rrd.errors import ConfigError, FrameError
from rrd.protocol.frame import DEFAULT_MAX_PAYLOAD, Decoder, Frame

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: a worker on pipes never pays for socket (or typing)
    import socket

READ_SIZE = 64 * 1024


class Relay(ABC):
    """A connection to the server, read and written one whole frame at a time."""

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._decoder = Decoder(max_payload=max_payload)
        self._frames: deque[Frame] = deque()

    @abstractmethod
    def _recv(self) -> bytes:
        """Some bytes from the server; empty at EOF."""

    @abstractmethod
    def _send(self, data: bytes) -> None:
        """All of `data` to the server."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def read_frame(self) -> Frame | None:
        """The next frame; None when the server closed the relay between frames."""
        while not self._frames:
            chunk = self._recv()
            if not chunk:
                if self._decoder.pending:
                    raise FrameError(
                        f"relay closed inside a frame after {self._decoder.pending} bytes"
                    )
                return None
            self._frames.extend(self._decoder.feed(chunk))
        return self._frames.popleft()

    def write_frame(self, frame: Frame) -> None:
        """Send one frame."""
        self._send(frame.encode())

    def send(self, data: bytes) -> None:
        """Send encoded frames."""
        self._send(data)


class PipeRelay(Relay):
    """Frames over two file descriptors (the worker's stdin and stdout); owns and closes both."""

    def __init__(
        self, read_fd: int, write_fd: int, *, max_payload: int = DEFAULT_MAX_PAYLOAD
    ) -> None:
        super().__init__(max_payload=max_payload)
        self.read_fd = read_fd
        self.write_fd = write_fd

    def _recv(self) -> bytes:
        return os.read(self.read_fd, READ_SIZE)

    def _send(self, data: bytes) -> None:
        # One os.write per frame; a pipe may still take fewer bytes (a signal, a full buffer).
        written = os.write(self.write_fd, data)
        if written < len(data):
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(self.write_fd, view) :]

    def close(self) -> None:
        for fd in {self.read_fd, self.write_fd}:
            with contextlib.suppress(OSError):
                os.close(fd)


class SocketRelay(Relay):
    """Frames over a connected stream socket (RR_RELAY `tcp://` or `unix://`)."""

    def __init__(self, sock: socket.socket, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        super().__init__(max_payload=max_payload)
        self.sock = sock

    @classmethod
    def connect(cls, address: str) -> SocketRelay:
        """Connect to `tcp://host:port` or `unix:///path`."""
        import socket  # here: a worker on pipes, the usual, never pays for it

        scheme, sep, rest = address.partition("://")
        if not sep or not rest:
            raise ConfigError(f"not a relay address: {address!r}", key="RR_RELAY")
        if scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(rest)
            except BaseException:
                sock.close()
                raise
            return cls(sock)
        if scheme == "tcp":
            host, colon, port = rest.rpartition(":")
            if not colon or not port.isdigit():
                raise ConfigError(f"tcp relay needs host:port, got {address!r}", key="RR_RELAY")
            sock = socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)))
            # Frames are small and strictly request/reply: Nagle would only add latency.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return cls(sock)
        raise ConfigError(
            f"unknown relay {address!r} (use pipes, tcp://host:port or unix:///path)",
            key="RR_RELAY",
        )

    def _recv(self) -> bytes:
        return self.sock.recv(READ_SIZE)

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()
