"""The control socket, served on the daemon's loop: goridge RPC frames with the JSON codec.

Room: control. Imports protocol, control.address and errors; the methods are the daemon's.

Each connection is its own task and runs its calls one after another; nothing a client does
holds up another client or the loop: reads are bounded in size and idle time, writes in
time, and the number of clients is capped. A malformed frame or call gets an ERROR reply (then
the connection is closed when its framing is lost), never a crash. A unix socket is created
with mode 0600, and is never taken over from a daemon still answering on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from rrd.control.address import socket_path
from rrd.errors import FrameError, RrdError, UsageError
from rrd.protocol.frame import Flag
from rrd.protocol.relay import read_frame, write_frame
from rrd.protocol.rpc import RpcError, decode_request, encode_error, encode_reply

log = logging.getLogger("rrd.control")

Method = Callable[[Any], Awaitable[Any]]
"""A call's handler: its decoded params in, a JSON-ready result out (RpcError to fail it)."""

MAX_REQUEST = 1 << 20
MAX_CLIENTS = 32
IDLE_TIMEOUT = 300.0
WRITE_TIMEOUT = 5.0


class ControlServer:
    """Serves `methods` (by RoadRunner's `Service.Method` names) at `address`."""

    def __init__(self, address: str, methods: Mapping[str, Method]) -> None:
        self.address = address
        self.methods = dict(methods)
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; UsageError when the address is taken (another rrd answers there)."""
        path = socket_path(self.address)
        try:
            if path is None:
                host, _, port = self.address.removeprefix("tcp://").rpartition(":")
                self._server = await asyncio.start_server(
                    self._accept, host.strip("[]") or "127.0.0.1", int(port)
                )
            else:
                await self._take_over_stale(path)
                previous = os.umask(0o177)  # the socket file is born 0600, with no window
                try:
                    self._server = await asyncio.start_unix_server(self._accept, path)
                finally:
                    os.umask(previous)
        except OSError as exc:
            raise UsageError(
                f"cannot listen on the control socket {self.address}: {exc.strerror or exc}"
            ) from None
        log.info(
            f"control socket on {self.address}",
            extra={"event": "control.listening", "address": self.address},
        )

    async def _take_over_stale(self, path: str) -> None:
        """Remove a socket file left by a dead rrd; refuse one a live rrd answers on."""
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(probe, path)
        except OSError:
            os.unlink(path)  # nobody answers: a leftover
        else:
            raise UsageError(f"another rrd serves the control socket {path}")
        finally:
            probe.close()

    async def close(self) -> None:
        """Stop listening, end every connection, remove the socket file."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for client in list(self._clients):
            client.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        path = socket_path(self.address)
        if path is not None and self._server is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= MAX_CLIENTS:
            writer.close()
            return
        self._clients.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away, or was too slow: its own loss
        finally:
            self._clients.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    frame = await read_frame(reader, max_payload=MAX_REQUEST)
            except EOFError:
                return
            except FrameError as exc:  # the framing is lost: say why, then hang up
                await self._send(writer, encode_error(0, "", f"bad frame: {exc}"))
                return
            seq = frame.options[0] if frame.options else 0
            try:
                request = decode_request(frame)
            except FrameError as exc:
                await self._send(writer, encode_error(seq, "", f"bad call: {exc}"))
                continue
            result = await self._call(request.method, request.body)
            if isinstance(result, _Failure):
                reply = encode_error(request.seq, request.method, result.message)
            else:
                try:
                    reply = encode_reply(request.seq, request.method, result, codec=Flag.CODEC_JSON)
                except ValueError as exc:
                    reply = encode_error(request.seq, request.method, str(exc))
            await self._send(writer, reply)

    async def _call(self, method: str, params: Any) -> Any:
        handler = self.methods.get(method)
        if handler is None:
            return _Failure(f"unknown method {method!r}; known: {', '.join(sorted(self.methods))}")
        try:
            return await handler(params)
        except (RpcError, RrdError) as exc:
            return _Failure(str(exc))
        except Exception:
            log.exception(
                f"the control call {method} failed on a bug in rrd",
                extra={"event": "control.failed", "method": method},
            )
            return _Failure(f"{method} failed on a bug in rrd; see its log")

    async def _send(self, writer: asyncio.StreamWriter, frame: Any) -> None:
        write_frame(writer, frame)
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()


class _Failure:
    """A call that failed: its message goes back in an ERROR frame."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message
