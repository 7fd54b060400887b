"""Calling a running rrd from a command line: blocking, one call at a time.

Room: control. Imports protocol, control.address and errors. A command line is not the
daemon: it may block, but never for ever (every call has a timeout).

Before it sends anything on a unix socket, the client asks the kernel who serves it
(SO_PEERCRED): only its own uid or root is trusted (and, by root, a service user whose
socket only it could have placed: `_placed_by`), so that a socket another user planted where
rrd's should be gets no call, and `server_pid` names the daemon for `rrd reload`.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Any

from rrd.control.address import (
    UnsafeControlPath,
    directory_problem,
    socket_path,
    tcp_host_port,
    who,
)
from rrd.errors import DaemonUnavailable, FrameError, RrdError
from rrd.protocol.frame import Decoder
from rrd.protocol.rpc import RpcError, decode_reply, encode_request

READ_SIZE = 64 * 1024
_UCRED = struct.Struct("3i")


class ControlClient:
    """A connection to rrd's control socket at `address`."""

    def __init__(self, address: str, *, timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._seq = 0
        self._decoder = Decoder()
        self.server_pid: int | None = None
        """The pid that serves a unix socket, as the kernel says; None over TCP."""

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """DaemonUnavailable, with a hint, when nothing answers at the address;
        UnsafeControlPath when another user serves it."""
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
                sock = socket.create_connection(tcp_host_port(self.address), timeout=self.timeout)
        except OSError as exc:
            raise DaemonUnavailable(
                f"no rrd answers on {self.address} ({exc.strerror or exc}); is `rrd serve` "
                "running with the same -c, -w and --pidfile?"
            ) from None
        if path is not None:
            try:
                self.server_pid = self._trusted_server(sock, path)
            except BaseException:
                sock.close()
                raise
        self._sock = sock

    @staticmethod
    def _trusted_server(sock: socket.socket, path: str) -> int:
        """The server's pid, once its uid is ours or root's."""
        pid, uid, _ = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        me = os.geteuid()
        if uid not in (me, 0) and not (me == 0 and _placed_by(uid, path)):
            raise UnsafeControlPath(
                f"refusing the control socket {path}: it is served by {who(uid)} (pid {pid}), "
                f"not by you ({who(me)}) or root; remove it if it is not an rrd of yours"
            )
        return int(pid)

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


def _placed_by(uid: int, path: str) -> bool:
    """Whether only `uid` (or root) could have put the socket at `path`: the socket and its
    directory are `uid`'s, the directory is writable by nobody else, and it sits in a root
    directory nobody else may write in. So root trusts an rrd of a service user, as systemd's
    DynamicUser with RuntimeDirectory= (/run/rrd) runs it, and no socket another user planted
    in a directory of theirs or in /tmp."""
    socket_file = Path(path)
    folder = socket_file.parent
    try:
        owner = socket_file.lstat().st_uid
    except OSError:
        return False
    return (
        owner == uid
        and directory_problem(folder, uid) is None
        and directory_problem(folder.parent, 0) is None
        and folder.stat().st_uid == uid
    )
