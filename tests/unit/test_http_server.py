"""The HTTP server of the status and metrics endpoints, over real sockets on 127.0.0.1: what it
answers, and that no client (slow, malformed, flooding, not reading) holds up another."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import pytest

from rrd.http.server import (
    Handler,
    HttpRequest,
    HttpResponse,
    HttpServer,
    Limits,
    parse_address,
)
from tests.helpers import eventually

DEADLINE = 5.0
DEFAULTS = Limits()
SEEN: list[HttpRequest] = []


def hello(request: HttpRequest) -> HttpResponse:
    SEEN.append(request)
    return HttpResponse(200, b"hello\n")


ROUTES: Mapping[str, Handler] = {"/hello": hello}


@contextlib.asynccontextmanager
async def serving(
    routes: Mapping[str, Handler] = ROUTES, limits: Limits = DEFAULTS, address: str = "127.0.0.1:0"
) -> AsyncIterator[HttpServer]:
    server = HttpServer(routes, name="test", limits=limits)
    await server.start(address)
    try:
        yield server
    finally:
        await server.close()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_reply(reader: asyncio.StreamReader, *, head: bool = False) -> Reply:
    async with asyncio.timeout(DEADLINE):
        raw = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        body = b"" if head else await reader.readexactly(length)
    return Reply(int(status), headers, body)


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def hung_up(reader: asyncio.StreamReader, timeout: float = DEADLINE) -> bool:
    """Whether the server ends the connection (EOF or reset) within `timeout`; what it sends
    before is read and dropped."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def ask(server: HttpServer, raw: bytes, *, head: bool = False) -> Reply:
    """One request on a connection of its own."""
    reader, writer = await connect(server)
    try:
        writer.write(raw)
        return await read_reply(reader, head=head)
    finally:
        writer.close()


def get(path: str, *extra: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: t", *extra, "", ""]).encode()


# --- what it answers ---


async def test_get_answers_with_the_handlers_body_and_headers() -> None:
    async with serving() as server:
        reply = await ask(server, get("/hello"))
    assert reply.status == 200
    assert reply.body == b"hello\n"
    assert reply.headers["content-length"] == "6"
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["server"] == "rrd"


async def test_head_has_the_headers_of_get_and_no_body() -> None:
    async with serving() as server:
        reader, writer = await connect(server)
        writer.write(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n" + get("/hello"))
        head = await read_reply(reader, head=True)
        after = await read_reply(reader)  # the next response starts right after the head
        writer.close()
    assert head.status == 200
    assert head.headers["content-length"] == "6"
    assert (after.status, after.body) == (200, b"hello\n")


async def test_unknown_path_is_404_and_other_methods_405_with_allow() -> None:
    async with serving() as server:
        missing = await ask(server, get("/nope"))
        posted = await ask(
            server, b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
        )
        deleted = await ask(server, b"DELETE /nope HTTP/1.1\r\nHost: t\r\n\r\n")
    assert missing.status == 404
    assert posted.status == 405
    assert posted.headers["allow"] == "GET, HEAD"
    assert deleted.status == 405


async def test_the_query_is_parsed_and_ignored_for_matching() -> None:
    SEEN.clear()
    async with serving() as server:
        reply = await ask(server, get("/hello?plugin=a&plugin=b&x=%2F", "X-Thing: 1", "X-Thing: 2"))
    assert reply.status == 200
    (request,) = SEEN
    assert request.method == "GET"
    assert request.path == "/hello"
    assert request.query == {"plugin": ["a", "b"], "x": ["/"]}
    assert request.headers["host"] == "t"
    assert request.headers["x-thing"] == "1, 2"


async def test_an_absolute_form_target_is_matched_by_its_path() -> None:
    SEEN.clear()
    async with serving() as server:
        reply = await ask(server, get("http://t:2112/hello?plugin=a"))
    assert reply.status == 200
    assert (SEEN[0].path, SEEN[0].query) == ("/hello", {"plugin": ["a"]})


async def test_content_type_and_status_come_from_the_handler() -> None:
    def json_unavailable(request: HttpRequest) -> HttpResponse:
        return HttpResponse(503, b"[]", "application/json")

    async with serving({"/ready": json_unavailable}) as server:
        reply = await ask(server, get("/ready"))
    assert (reply.status, reply.body, reply.headers["content-type"]) == (
        503,
        b"[]",
        "application/json",
    )


async def test_set_routes_swaps_handlers_on_a_live_connection() -> None:
    async with serving() as server:
        reader, writer = await connect(server)
        writer.write(get("/hello"))
        assert (await read_reply(reader)).status == 200
        server.set_routes({"/bye": lambda request: HttpResponse(200, b"bye")})
        writer.write(get("/hello") + get("/bye"))
        assert (await read_reply(reader)).status == 404
        assert (await read_reply(reader)).body == b"bye"
        writer.close()


# --- keep-alive ---


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with serving() as server:
        reader, writer = await connect(server)
        for _ in range(3):
            writer.write(get("/hello"))
            assert (await read_reply(reader)).body == b"hello\n"
        writer.write(get("/hello") * 3)  # pipelined
        for _ in range(3):
            assert (await read_reply(reader)).body == b"hello\n"
        assert server.connections == 1
        writer.close()


async def test_connection_close_is_honoured() -> None:
    async with serving() as server:
        reader, writer = await connect(server)
        writer.write(get("/hello", "Connection: close"))
        reply = await read_reply(reader)
        assert reply.headers["connection"] == "close"
        assert await hung_up(reader)
        writer.close()


async def test_an_http_1_0_client_is_answered_then_closed() -> None:
    async with serving() as server:
        reader, writer = await connect(server)
        writer.write(b"GET /hello HTTP/1.0\r\n\r\n")
        assert (await read_reply(reader)).body == b"hello\n"
        assert await hung_up(reader)
        writer.close()


# --- malformed and oversized ---


async def test_garbage_gets_400_then_the_connection_is_closed() -> None:
    async with serving() as server:
        reader, writer = await connect(server)
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")
        reply = await read_reply(reader)
        assert reply.status == 400
        assert reply.headers["connection"] == "close"
        assert await hung_up(reader)
        writer.close()
        assert (await ask(server, get("/hello"))).status == 200


async def test_a_head_over_the_limit_gets_431() -> None:
    async with serving() as server:
        whole = await ask(server, get("/hello", "X-Big: " + "a" * 9000))
        reader, writer = await connect(server)  # a head that never ends
        writer.write(b"GET /hello HTTP/1.1\r\n" + b"X-Header: 0123456789\r\n" * 1000)
        endless = await read_reply(reader)
        assert await hung_up(reader)
        writer.close()
        within = await ask(server, get("/hello", "X-Big: " + "a" * 7000))
    assert whole.status == 431
    assert endless.status == 431
    assert within.status == 200


async def test_a_body_over_the_limit_gets_413_and_a_small_one_is_ignored() -> None:
    async with serving() as server:
        declared = await ask(server, get("/hello", "Content-Length: 2000") + b"x" * 2000)
        chunked = b"GET /hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunked += b"400\r\n" + b"y" * 1024 + b"\r\n" + b"1\r\nz\r\n0\r\n\r\n"
        streamed = await ask(server, chunked)
        reader, writer = await connect(server)
        writer.write(get("/hello", "Content-Length: 10") + b"0123456789" + get("/hello"))
        small = await read_reply(reader)
        next_one = await read_reply(reader)
        writer.close()
    assert declared.status == 413
    assert streamed.status == 413
    assert (small.status, next_one.status) == (200, 200)


# --- clients that would hold up others ---


async def test_slowloris_is_closed_after_head_timeout_while_others_are_served() -> None:
    async with serving(limits=Limits(head_timeout=0.3)) as server:
        reader, writer = await connect(server)
        began = time.monotonic()
        writer.write(b"GET /hello HTTP/1.1\r\n")

        async def dribble() -> None:
            for byte in b"X-Slow: " + b"a" * 1000:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

        dribbling = asyncio.create_task(dribble())
        try:
            asked = time.monotonic()
            assert (await ask(server, get("/hello"))).status == 200
            answered_in = time.monotonic() - asked
            assert await hung_up(reader)
            lasted = time.monotonic() - began
        finally:
            dribbling.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await dribbling
            writer.close()
        assert answered_in < 0.5
        assert 0.25 < lasted < 3.0
        assert server.aborted == 1


async def test_a_client_that_never_reads_is_cut_off_while_others_are_served() -> None:
    big = b"m" * (8 << 20)
    limits = Limits(write_timeout=0.5)
    routes = {"/big": lambda request: HttpResponse(200, big), "/hello": hello}
    async with serving(routes, limits) as server:
        loop = asyncio.get_running_loop()
        lazy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lazy.setblocking(False)
        try:
            await loop.sock_connect(lazy, ("127.0.0.1", server.port))
            await loop.sock_sendall(lazy, get("/big"))
            await eventually(lambda: server.connections == 1)
            assert (await ask(server, get("/hello"))).status == 200  # meanwhile
            await eventually(lambda: server.aborted == 1, timeout=DEADLINE)
            await eventually(lambda: server.connections == 0)
        finally:
            lazy.close()
        assert (await ask(server, get("/hello"))).status == 200


async def test_beyond_max_connections_a_newcomer_gets_503_until_one_leaves() -> None:
    async with serving(limits=Limits(max_connections=2)) as server:
        first = await connect(server)
        second = await connect(server)
        await eventually(lambda: server.connections == 2)
        reader, writer = await connect(server)
        writer.write(get("/hello"))
        reply = await read_reply(reader)
        assert (reply.status, reply.headers["connection"]) == (503, "close")
        assert await hung_up(reader)
        writer.close()
        assert server.rejected == 1
        first[1].close()
        await eventually(lambda: server.connections == 1)
        assert (await ask(server, get("/hello"))).status == 200
        second[1].close()


async def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout() -> None:
    async with serving(limits=Limits(idle_timeout=0.3)) as server:
        reader, writer = await connect(server)
        writer.write(get("/hello"))
        await read_reply(reader)
        began = time.monotonic()
        assert await hung_up(reader)
        idled = time.monotonic() - began
        writer.close()
    assert 0.25 < idled < 3.0


async def test_a_connection_that_sends_nothing_is_closed_after_head_timeout() -> None:
    async with serving(limits=Limits(head_timeout=0.3, idle_timeout=60)) as server:
        reader, writer = await connect(server)
        assert await hung_up(reader)
        writer.close()


# --- failures ---


async def test_a_failing_handler_gets_500_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    healthy = [False]

    def flaky(request: HttpRequest) -> HttpResponse:
        if not healthy[0]:
            raise RuntimeError("secret detail")
        return HttpResponse(200, b"ok")

    caplog.set_level(logging.DEBUG, logger="rrd.http")
    async with serving({"/flaky": flaky, "/hello": hello}) as server:
        reader, writer = await connect(server)
        for _ in range(2):
            writer.write(get("/flaky"))
            reply = await read_reply(reader)
            assert reply.status == 500
            assert b"secret" not in reply.body
            assert b"Traceback" not in reply.body
        writer.write(get("/hello"))
        assert (await read_reply(reader)).status == 200
        healthy[0] = True
        writer.write(get("/flaky"))
        assert (await read_reply(reader)).status == 200
        healthy[0] = False
        writer.write(get("/flaky"))
        assert (await read_reply(reader)).status == 500
        writer.close()
    failures = [r for r in caplog.records if getattr(r, "event", "") == "http.handler_failed"]
    assert len(failures) == 2  # the first of each run of failures
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failures)


async def test_a_handler_answering_a_non_final_status_gets_500() -> None:
    async with serving({"/odd": lambda request: HttpResponse(101)}) as server:
        assert (await ask(server, get("/odd"))).status == 500


# --- close ---


async def test_close_ends_every_connection_promptly_and_leaves_no_task() -> None:
    server = HttpServer(ROUTES, name="test")
    await server.start("127.0.0.1:0")
    port = server.port
    mid_head = await connect(server)
    mid_head[1].write(b"GET /hello HTTP/1.1\r\nHost:")
    idle = await connect(server)
    idle[1].write(get("/hello"))
    await read_reply(idle[0])
    await eventually(lambda: server.connections == 2)
    server.limits = Limits(max_connections=2)
    turned_away = await connect(server)  # its 503 sent, its close still a moment away
    await read_reply(turned_away[0])
    began = time.monotonic()
    await server.close()
    took = time.monotonic() - began
    assert took < 1.0
    assert asyncio.all_tasks() - {asyncio.current_task()} == set()
    for reader, writer in (mid_head, idle, turned_away):
        assert await hung_up(reader, 2.0)
        writer.close()
    await server.close()  # idempotent
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


# --- addresses ---


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_listen_on_an_ipv4_address() -> None:
    async with serving(address="127.0.0.1:0") as server:
        assert server.port > 0
        assert (await ask(server, get("/hello"))).status == 200


async def test_listen_everywhere_takes_one_port_for_both_families() -> None:
    async with serving(address=":0") as server:
        assert (await ask(server, get("/hello"))).status == 200
        if ipv6_loopback():
            reader, writer = await asyncio.open_connection("::1", server.port)
            writer.write(get("/hello"))
            assert (await read_reply(reader)).status == 200
            writer.close()


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
async def test_listen_on_a_bracketed_ipv6_address() -> None:
    async with serving(address="[::1]:0") as server:
        reader, writer = await asyncio.open_connection("::1", server.port)
        writer.write(get("/hello"))
        assert (await read_reply(reader)).status == 200
        writer.close()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:2112", ("127.0.0.1", 2112)),
        (":2112", (None, 2112)),
        ("[::1]:2112", ("::1", 2112)),
        ("localhost:0", ("localhost", 0)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_parse_address_reads_roadrunners_forms(
    address: str, expected: tuple[str | None, int]
) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "nonsense",
        "1.2.3.4:99999",
        "",
        ":",
        "127.0.0.1:",
        "127.0.0.1:-1",
        "127.0.0.1:http",
        "127.0.0.1:٣",
        "::1:2112",
        "[::1:2112",
        "[]:2112",
        "http://127.0.0.1:2112",
        "a host:2112",
        "a\nb:2112",
    ],
)
async def test_a_bad_address_is_a_value_error_of_one_line(address: str) -> None:
    server = HttpServer(ROUTES, name="test")
    with pytest.raises(ValueError) as caught:
        await server.start(address)
    message = str(caught.value)
    assert "\n" not in message.replace(repr(address), "")
    assert "HOST:PORT" in message
    await server.close()


async def test_a_port_in_use_is_an_os_error() -> None:
    async with serving() as taken:
        second = HttpServer(ROUTES, name="test")
        with pytest.raises(OSError):
            await second.start(f"127.0.0.1:{taken.port}")
        await second.close()


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="head_timeout"):
        Limits(head_timeout=0)


# --- fuzz ---


def fuzz_inputs(seed: int, count: int) -> list[bytes]:
    """Random bytes, and valid requests with bytes flipped, cut or repeated."""
    rng = random.Random(seed)
    valid = get("/hello?plugin=a", "Accept: */*") + get("/nope")
    found: list[bytes] = []
    for n in range(count):
        if n % 2:
            found.append(rng.randbytes(rng.randint(1, 600)))
            continue
        data = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(data) + 1)
            match rng.randrange(4):
                case 0:
                    data[at : at + 1] = bytes([rng.randrange(256)])
                case 1:
                    del data[at:]
                case 2:
                    data[at:at] = data[: rng.randint(1, 40)]
                case _:
                    data[at:at] = rng.choice([b"\r\n", b"\n", b":", b" ", b"\x00", b"\r\n\r\n"])
        found.append(bytes(data))
    return found


async def test_random_requests_are_answered_or_closed_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="rrd.http")
    statuses: list[int] = []

    async def send(server: HttpServer, data: bytes) -> None:
        reader, writer = await connect(server)
        try:
            writer.write(data)
            writer.write_eof()
            async with asyncio.timeout(DEADLINE):
                answer = await reader.read()
        except ConnectionError:
            return
        finally:
            writer.close()
        if answer:
            assert answer.startswith(b"HTTP/1.1 "), answer[:40]
            statuses.append(int(answer[9:12]))

    async with serving(limits=Limits(head_timeout=2.0)) as server:
        inputs = fuzz_inputs(seed=16, count=200)
        for batch in range(0, len(inputs), 20):
            await asyncio.gather(*(send(server, data) for data in inputs[batch : batch + 20]))
        assert (await ask(server, get("/hello"))).status == 200
        await eventually(lambda: server.connections == 0)
    assert statuses
    assert set(statuses) <= {200, 400, 404, 405, 413, 431}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_coroutine_handler_is_awaited_and_others_are_served_meanwhile() -> None:
    """A handler that waits (the metrics one reads /proc in a thread) holds only its own
    connection; one that fails while waiting gets a 500 like any other."""
    release = asyncio.Event()

    async def waits(request: HttpRequest) -> HttpResponse:
        await release.wait()
        return HttpResponse(200, b"waited\n")

    async def fails(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(0)
        raise RuntimeError("broken after a wait")

    routes: Mapping[str, Handler] = {"/wait": waits, "/fail": fails, "/hello": hello}
    async with serving(routes) as server:
        waiting = asyncio.create_task(ask(server, get("/wait")))
        assert (await ask(server, get("/hello"))).status == 200
        assert not waiting.done()
        release.set()
        assert (await waiting).body == b"waited\n"
        assert (await ask(server, get("/fail"))).status == 500
