"""Calling a running rrd from a command line: blocking, one call at a time.

Room: control. Imports protocol, control.address and errors. A command line is not the
daemon: it may block, but never for ever (every call has a timeout).
"""

from __future__ import annotations

import socket
from typing import Any

from rrd.control.address import socket_path
from rrd.errors import DaemonUnavailable, FrameError, RrdError
from rrd.protocol.frame import Decoder
from rrd.protocol.rpc import RpcError, decode_reply, encode_request

READ_SIZE = 64 * 1024


class ControlClient:
    """A connection to rrd's control socket at `address`."""

    def __init__(self, address: str, *, timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._seq = 0
        self._decoder = Decoder()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """DaemonUnavailable, with a hint, when nothing answers at the address."""
        path = socket_path(self.address)
        try:
            if path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(path)
                except BaseException:
                    sock.close()
                    raise
            else:
                host, _, port = self.address.removeprefix("tcp://").rpartition(":")
                sock = socket.create_connection(
                    (host.strip("[]") or "127.0.0.1", int(port)), timeout=self.timeout
                )
        except OSError as exc:
            raise DaemonUnavailable(
                f"no rrd answers on {self.address} ({exc.strerror or exc}); is `rrd serve` "
                "running with the same -c, -w and --pidfile?"
            ) from None
        self._sock = sock

    def call(self, method: str, params: Any = None, *, timeout: float | None = None) -> Any:
        """The result of one call; RpcError when rrd says the call failed."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._seq += 1
        self._sock.settimeout(timeout or self.timeout)
        try:
            self._sock.sendall(encode_request(self._seq, method, params).encode())
            while True:
                chunk = self._sock.recv(READ_SIZE)
                if not chunk:
                    raise RrdError(f"rrd closed the control connection during {method}")
                frames = self._decoder.feed(chunk)
                if frames:
                    return decode_reply(frames[0], seq=self._seq)
        except TimeoutError:
            raise RrdError(f"rrd did not answer {method} in time") from None
        except RpcError:
            raise
        except (OSError, FrameError) as exc:
            raise RrdError(f"the control connection broke during {method}: {exc}") from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
