"""A small HTTP/1.1 server for GET endpoints, on the daemon's loop: h11 parses, asyncio streams
carry the bytes.

Room: http. Imports the standard library and h11 only.

Kubernetes probes, curl, Prometheus and hostile clients talk to it, and none of them may stall
the loop or another client: each connection is a task of its own; a request head must arrive
whole within `head_timeout` (of the connection's start, or of a keep-alive request's first
byte), a keep-alive connection may idle `idle_timeout` between requests, a response the client
does not read is dropped after `write_timeout`, and at most `max_connections` are served at
once (a newcomer beyond them gets a 503 at once). A malformed request gets a 400 (an oversized
head 431, an oversized body 413) and the connection is closed; a handler that raises gets a 500
and the connection goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from urllib.parse import parse_qs

import h11

log = logging.getLogger("rrd.http")

READ_SIZE = 64 * 1024
LINGER = 0.5
"""After an error response that closes the connection, how long what the client still sends
is read and dropped: closing on unread bytes sends a reset that can destroy our answer."""
LINGER_BYTES = 64 * 1024
MAX_QUERY_FIELDS = 100


@dataclass(frozen=True)
class HttpRequest:
    """What a handler sees of a request."""

    method: str
    """"GET" or "HEAD"."""
    path: str
    """The target without its query, as sent ("/health")."""
    query: dict[str, list[str]]
    """The target's query, as `parse_qs` reads it: ?plugin=a&plugin=b -> {"plugin": ["a", "b"]}."""
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with ", "."""


@dataclass(frozen=True)
class HttpResponse:
    """A handler's answer; the server adds Content-Length, Cache-Control and Server."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]
"""Answers one request; a coroutine when it must wait (a thread reading /proc), else plain."""
"""Synchronous: handlers answer from in-memory state, on the loop."""


@dataclass(frozen=True)
class Limits:
    """How much a client may send, and how slowly, before it is cut off."""

    max_head_bytes: int = 8192
    """Request line and headers; beyond: 431, then close."""
    max_body_bytes: int = 1024
    """A GET's body beyond this: 413, then close (a smaller one is read and ignored)."""
    head_timeout: float = 5.0
    """Time to receive a whole request (head and body): beyond, the connection is closed."""
    idle_timeout: float = 15.0
    """A keep-alive connection idle this long between requests is closed."""
    write_timeout: float = 10.0
    """A client that does not read its response this long is cut off (the connection aborted)."""
    max_connections: int = 64
    """Connections served at once; a newcomer beyond them gets a 503 and is closed."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"Limits.{name} must be positive, not {value!r}")


def parse_address(address: str) -> tuple[str | None, int]:
    """(host, port) of "HOST:PORT" as RoadRunner writes it: "127.0.0.1:2112", ":2112" (every
    interface: host None), "[::1]:2112", "localhost:2112". ValueError (one line) otherwise."""
    expected = "expected HOST:PORT such as 127.0.0.1:2112, :2112 or [::1]:2112"
    if "://" in address:
        raise ValueError(f"bad address {address!r}: no scheme wanted; {expected}")
    host, colon, port_text = address.rpartition(":")
    if not colon:
        raise ValueError(f"bad address {address!r}: no port; {expected}")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"bad address {address!r}: the port must be 0 to 65535; {expected}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host or "[" in host or "]" in host:
            raise ValueError(f"bad address {address!r}: {expected}")
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"bad address {address!r}: an IPv6 host goes in brackets; {expected}")
    if any(c.isspace() or c == "/" for c in host) or not host.isprintable():
        raise ValueError(f"bad address {address!r}: {expected}")
    return host or None, int(port_text)


class HttpServer:
    """Serves GET and HEAD for `routes` (exact paths) at one address, on the running loop."""

    def __init__(
        self, routes: Mapping[str, Handler], *, name: str, limits: Limits = Limits()
    ) -> None:
        self.name = name
        """Who this server is in log lines ("status", "metrics")."""
        self.limits = limits
        self.rejected = 0
        """Connections answered 503 because `max_connections` were being served."""
        self.aborted = 0
        """Connections cut off: a response not read in time, or a request not sent in time."""
        self._routes: dict[str, Handler] = dict(routes)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._failing: set[str] = set()
        self._lingering: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}
        self._closing = False

    @property
    def port(self) -> int:
        """The port listened on (the one the kernel chose, for port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError(f"the {self.name} HTTP server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self._connections)

    def set_routes(self, routes: Mapping[str, Handler]) -> None:
        """Swap the handlers (a config reload): the next request on any connection uses them."""
        self._routes = dict(routes)
        self._failing.clear()

    async def start(self, address: str) -> None:
        """Listen at `address` ("HOST:PORT"); ValueError for an address that is not one,
        OSError when it cannot be bound."""
        if self._server is not None or self._closing:
            raise RuntimeError(f"the {self.name} HTTP server was started already")
        host, port = parse_address(address)
        backlog = min(4 * self.limits.max_connections, socket.SOMAXCONN)
        if host is None:
            listener = _listen_everywhere(port, backlog)
            try:
                self._server = await asyncio.start_server(self._accept, sock=listener)
            except BaseException:
                listener.close()
                raise
        else:
            self._server = await asyncio.start_server(self._accept, host, port, backlog=backlog)

    async def close(self) -> None:
        """Stop listening and end every connection at once, whatever it is doing."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for transport, later in self._lingering.items():
            later.cancel()
            transport.close()
        self._lingering.clear()
        while self._connections:
            connections = list(self._connections)
            for connection in connections:
                connection.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
        if self._server is not None:
            # Since Python 3.12.1 wait_closed() waits for the connections too; they are gone.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        if self._closing:
            transport.abort()
            return
        if len(self._connections) >= self.limits.max_connections:
            self.rejected += 1
            log.debug(
                f"{self.name}: {self.limits.max_connections} HTTP connections served already; "
                "a new one got 503",
                extra={"event": "http.busy", "server": self.name},
            )
            writer.write(_closing_response(503))
            if len(self._lingering) >= self.limits.max_connections:
                transport.close()
                return
            # Closed a moment later, what the client sends meanwhile read: a close on unread
            # bytes would send a reset that can destroy the 503. A timer, not a task.
            writer.write_eof()
            later = asyncio.get_running_loop().call_later(LINGER, self._end_linger, transport)
            self._lingering[transport] = later
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
            writer.close()  # after what is left to write: bounded, as a slow reader is not
            async with asyncio.timeout(self.limits.write_timeout):
                await writer.wait_closed()
        except asyncio.CancelledError:
            pass  # ours (close()): end quietly, as 3.11 logs a stream callback's cancellation
        except (OSError, TimeoutError):
            pass  # the client went away, or a response sat unread: its own loss
        except Exception:
            log.exception(
                f"{self.name}: an HTTP connection failed on a bug in rrd",
                extra={"event": "http.connection_failed", "server": self.name},
            )
        finally:
            self._connections.discard(task)
            transport.abort()  # no-op once closed; otherwise drops what was not sent

    def _end_linger(self, transport: asyncio.BaseTransport) -> None:
        del self._lingering[transport]
        transport.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests one after another until the client or the protocol ends them."""
        loop = asyncio.get_running_loop()
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_bytes)
        deadline: float | None = loop.time() + self.limits.head_timeout
        while True:
            try:
                request = await self._next_request(conn, reader, deadline)
            except h11.RemoteProtocolError as exc:
                await self._refuse(reader, writer, exc.error_status_hint)
                return
            except _Refused as refused:
                await self._refuse(reader, writer, refused.status)
                return
            except TimeoutError:
                self.aborted += 1
                log.debug(
                    f"{self.name}: an HTTP request did not arrive whole within "
                    f"{self.limits.head_timeout:g}s; closed",
                    extra={"event": "http.too_slow", "server": self.name},
                )
                return
            if request is None:
                return
            head = request.method == "HEAD"
            response = await self._respond(request)
            await self._write(writer, self._encode(conn, response, head=head))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # HTTP/1.0, Connection: close
            conn.start_next_cycle()
            deadline = None

    async def _next_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, deadline: float | None
    ) -> HttpRequest | None:
        """The next whole request (its body read and dropped); None when the client hangs up
        or idles too long. `deadline` (loop time) bounds the whole request; None: the
        connection is idle and the deadline starts with the request's first byte."""
        limits = self.limits
        head: h11.Request | None = None
        body = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if deadline is None:
                    deadline = asyncio.get_running_loop().time() + limits.head_timeout
                    if not conn.trailing_data[0]:
                        try:
                            async with asyncio.timeout(limits.idle_timeout):
                                data = await reader.read(READ_SIZE)
                        except TimeoutError:
                            return None
                        deadline = asyncio.get_running_loop().time() + limits.head_timeout
                        conn.receive_data(data)
                        continue
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(READ_SIZE)
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
                if _head_size(event) > limits.max_head_bytes:
                    raise _Refused(431)
                length = _content_length(event)
                if length is not None and length > limits.max_body_bytes:
                    raise _Refused(413)
            elif isinstance(event, h11.Data):
                body += len(event.data)
                if body > limits.max_body_bytes:
                    raise _Refused(413)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _request(head)
            else:
                return None  # ConnectionClosed

    async def _respond(self, request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return _METHOD_NOT_ALLOWED
        handler = self._routes.get(request.path)
        if handler is None:
            return _NOT_FOUND
        try:
            answer = handler(request)
            response = await answer if inspect.isawaitable(answer) else answer
            if not 200 <= response.status <= 599:
                raise ValueError(f"status {response.status} is not a final HTTP status")
        except Exception as exc:
            if request.path not in self._failing:
                self._failing.add(request.path)
                log.error(
                    f"{self.name}: the handler of {request.path} failed: {exc!r} (logged again "
                    "only after it has answered once)",
                    exc_info=True,
                    extra={
                        "event": "http.handler_failed",
                        "server": self.name,
                        "path": request.path,
                    },
                )
            return _INTERNAL_ERROR
        if self._failing:
            self._failing.discard(request.path)
        return response

    def _encode(self, conn: h11.Connection, response: HttpResponse, *, head: bool) -> bytes:
        status = response.status
        body = b"" if status in (204, 304) else response.body
        headers = [
            (b"content-type", response.content_type.encode("latin-1")),
            (b"content-length", b"%d" % len(body)),
            (b"cache-control", b"no-store"),
            (b"server", b"rrd"),
        ]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        data = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        assert data is not None
        if body and not head:
            more = conn.send(h11.Data(data=body))
            assert more is not None
            data += more
        end = conn.send(h11.EndOfMessage())
        assert end is not None
        return data + end

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write; a client that leaves too much of it unread for `write_timeout` is cut off."""
        writer.write(data)
        transport = writer.transport
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            try:
                async with asyncio.timeout(self.limits.write_timeout):
                    await writer.drain()
            except TimeoutError:
                transport.abort()
                self.aborted += 1
                log.debug(
                    f"{self.name}: an HTTP client did not read its response within "
                    f"{self.limits.write_timeout:g}s; cut off",
                    extra={"event": "http.write_timeout", "server": self.name},
                )
                raise ConnectionAbortedError("the client did not read its response") from None

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int
    ) -> None:
        """Answer `status` and close: say we are done, then drop what the client still sends
        for a moment, so that it reads our answer rather than a reset."""
        log.debug(
            f"{self.name}: refused an HTTP request with {status}",
            extra={"event": "http.refused", "server": self.name, "status": status},
        )
        writer.write(_closing_response(status))
        writer.write_eof()
        dropped = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER):
                while dropped < LINGER_BYTES and (chunk := await reader.read(READ_SIZE)):
                    dropped += len(chunk)


class _Refused(Exception):
    """A request refused with `status` before it is read whole."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _listen_everywhere(port: int, backlog: int) -> socket.socket:
    """One socket for every interface, IPv6 and IPv4 alike (as Go's ":2112"), so that port 0
    names one port; IPv4 alone where the host has no IPv6."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        where: tuple[str, int] = ("0.0.0.0", port)
    else:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        where = ("::", port)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _request(event: h11.Request) -> HttpRequest:
    target = event.target.decode("latin-1")
    if not target.startswith("/") and "://" in target:  # absolute-form, as sent to a proxy
        target = "/" + target.partition("://")[2].partition("/")[2]
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for raw_name, raw_value in event.headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    try:
        fields = parse_qs(query, max_num_fields=MAX_QUERY_FIELDS) if query else {}
    except ValueError:
        fields = {}  # beyond MAX_QUERY_FIELDS: no handler needs that many
    return HttpRequest(event.method.decode("latin-1"), path, fields, headers)


def _head_size(event: h11.Request) -> int:
    """About the bytes of the request line and headers (h11 bounds only a head still arriving)."""
    size = len(event.method) + len(event.target) + 12
    for name, value in event.headers:
        size += len(name) + len(value) + 4
    return size


def _content_length(event: h11.Request) -> int | None:
    for name, value in event.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is digits
    return None


@cache
def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


@cache
def _closing_response(status: int) -> bytes:
    """A whole response that ends the connection, for requests refused before a handler."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        status, phrase = 400, HTTPStatus.BAD_REQUEST.phrase
    body = f"{status} {phrase}\n".encode("ascii")
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Server: rrd\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_NOT_FOUND = HttpResponse(404, b"404 Not Found\n")
_METHOD_NOT_ALLOWED = HttpResponse(405, b"405 Method Not Allowed: GET and HEAD only\n")
_INTERNAL_ERROR = HttpResponse(500, b"500 Internal Server Error: see rrd's log\n")
