"""read_frame/write_frame over real sockets and pipes, as the server reads a worker's stdout."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

import pytest

from rrd.errors import FrameError, ScriptOpenError
from rrd.protocol.control import Payload, payload_frame, pid_request, stop_request
from rrd.protocol.frame import HEADER_SIZE, Flag, Frame, Stream
from rrd.protocol.relay import SCRIPT_MESSAGE_LIMIT, read_frame, write_frame
from tests.fakes import settle

DEADLINE = 10.0
"""Seconds any one test may take; a passing one takes milliseconds."""
MiB = 1024 * 1024


def run(test: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body under a deadline, without pytest-asyncio."""

    async def bounded() -> None:
        await asyncio.wait_for(test(), DEADLINE)

    asyncio.run(bounded())


@asynccontextmanager
async def relay() -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A socketpair as asyncio streams: (what the server reads, what the worker writes to)."""
    ours, theirs = socket.socketpair()
    reader, reader_side = await asyncio.open_unix_connection(sock=ours)
    _unused, writer = await asyncio.open_unix_connection(sock=theirs)
    try:
        yield reader, writer
    finally:
        for stream in (writer, reader_side):
            if not stream.is_closing():
                stream.close()
            with suppress(OSError):
                await stream.wait_closed()


async def send(writer: asyncio.StreamWriter, data: bytes, *, close: bool = True) -> None:
    """Write raw bytes as a worker would, then close its end (EOF) if asked."""
    writer.write(data)
    await writer.drain()
    if close:
        writer.close()
        await writer.wait_closed()


def test_whole_frames_round_trip() -> None:
    frames = [
        pid_request(12345),
        payload_frame(Payload(b'{"tick":1}', b'{"lastTick":0}')),
        Frame(b"boom", Flag.ERROR),
        Frame(b"", Flag.NONE, (), Stream.PONG),
        Frame(b"x" * 70_000, Flag.CODEC_RAW, (3, 4, 5)),
        stop_request(),
    ]

    async def main() -> None:
        async with relay() as (reader, writer):
            for frame in frames:
                write_frame(writer, frame)
            await writer.drain()
            assert [await read_frame(reader) for _ in frames] == frames

    run(main)


def test_one_mebibyte_frame_while_the_reader_drains() -> None:
    frame = Frame(bytes(range(256)) * 4096, Flag.NONE, (17,))

    async def main() -> None:
        async with relay() as (reader, writer):
            write_frame(writer, frame)
            drained = asyncio.ensure_future(writer.drain())
            assert await read_frame(reader) == frame
            await drained

    run(main)


def test_write_frame_is_one_write() -> None:
    writes: list[bytes] = []

    class Recorder:
        def write(self, data: bytes) -> None:
            writes.append(data)

    frame = payload_frame(Payload(b"body", b"ctx"))
    write_frame(cast(Any, Recorder()), frame)
    assert writes == [frame.encode()]


def test_clean_eof_is_eof_error() -> None:
    async def main() -> None:
        async with relay() as (reader, writer):
            await send(writer, pid_request(1).encode())
            assert await read_frame(reader) == pid_request(1)
            with pytest.raises(EOFError):
                await read_frame(reader)

    run(main)


@pytest.mark.parametrize("cut", [1, 5, HEADER_SIZE - 1])
def test_eof_mid_header(cut: int) -> None:
    async def main() -> None:
        async with relay() as (reader, writer):
            await send(writer, pid_request(1).encode()[:cut])
            with pytest.raises(FrameError, match="inside a frame header") as caught:
                await read_frame(reader)
            assert not isinstance(caught.value, EOFError)

    run(main)


@pytest.mark.parametrize("cut", [HEADER_SIZE, HEADER_SIZE + 2, HEADER_SIZE + 6])
def test_eof_mid_body(cut: int) -> None:
    wire = payload_frame(Payload(b"body", b"ctx")).encode()

    async def main() -> None:
        async with relay() as (reader, writer):
            await send(writer, wire[:cut])
            with pytest.raises(FrameError, match=f"{cut - HEADER_SIZE} of 11 bytes"):
                await read_frame(reader)

    run(main)


def test_could_not_open_input_file() -> None:
    text = "Could not open input file: x.php\n"

    async def main() -> None:
        async with relay() as (reader, writer):
            await send(writer, text.encode())
            with pytest.raises(ScriptOpenError) as caught:
                await read_frame(reader)
            assert caught.value.text == text
            assert str(caught.value) == "Could not open input file: x.php"

    run(main)


def test_could_not_open_arriving_in_pieces() -> None:
    text = "Could not open input file: some/long/path/worker.php\n"

    async def main() -> None:
        async with relay() as (reader, writer):
            await send(writer, text[:20].encode(), close=False)
            reading = asyncio.ensure_future(read_frame(reader))
            # The reader takes each piece and waits for more before the next one is sent.
            await settle()
            assert not reading.done() and not reader._buffer  # type: ignore[attr-defined]
            await send(writer, text[20:40].encode(), close=False)
            await settle()
            assert not reading.done() and not reader._buffer  # type: ignore[attr-defined]
            await send(writer, text[40:].encode())
            with pytest.raises(ScriptOpenError) as caught:
                await reading
            assert caught.value.text == text

    run(main)


def test_could_not_open_without_a_newline_stops_at_eof_or_the_limit() -> None:
    async def main() -> None:
        async with relay() as (reader, writer):
            await send(writer, b"Could not open input file: x.php")
            with pytest.raises(ScriptOpenError) as caught:
                await read_frame(reader)
            assert caught.value.text == "Could not open input file: x.php"
        async with relay() as (reader, writer):
            await send(writer, b"Could not op" + b"e" * (2 * SCRIPT_MESSAGE_LIMIT), close=False)
            with pytest.raises(ScriptOpenError) as caught:
                await read_frame(reader)
            assert len(caught.value.text) == SCRIPT_MESSAGE_LIMIT

    run(main)


def test_could_not_open_from_a_real_process() -> None:
    script = "import sys; sys.stdout.write('Could not open input file: gone.php\\n'); sys.exit(1)"

    async def main() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        with pytest.raises(ScriptOpenError) as caught:
            await read_frame(process.stdout)
        assert caught.value.text == "Could not open input file: gone.php\n"
        assert await process.wait() == 1

    run(main)


def test_frames_from_a_real_process() -> None:
    frames = [pid_request(7), payload_frame(Payload(b"OK:hello", b"{}")), Frame(b"e", Flag.ERROR)]
    wire = b"".join(frame.encode() for frame in frames)
    script = f"import sys; sys.stdout.buffer.write({wire!r})"

    async def main() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        assert [await read_frame(process.stdout) for _ in frames] == frames
        with pytest.raises(EOFError):
            await read_frame(process.stdout)
        assert await process.wait() == 0

    run(main)


@pytest.mark.parametrize(
    ("garbage", "shown"),
    [
        (b"PHP Warning:  Undefined variable $x\n", "PHP Warning:"),
        (b"\x13\x00\x00\x00\x00\x00\xde\xad\xbe\xef\x00\x00", "\\x13\\x00\\x00"),
    ],
)
def test_bad_crc_is_a_frame_error_with_a_printable_preview(garbage: bytes, shown: str) -> None:
    async def main() -> None:
        async with relay() as (reader, writer):
            await send(writer, garbage)
            with pytest.raises(FrameError, match="CRC") as caught:
                await read_frame(reader)
            message = str(caught.value)
            assert message.isprintable()
            assert shown in message

    run(main)


def test_max_payload_is_checked_before_the_body_is_read() -> None:
    wire = Frame(b"x" * 1000).encode()

    async def main() -> None:
        async with relay() as (reader, writer):
            # Only the header is sent and the stream stays open: the limit must trip at once.
            await send(writer, wire[:HEADER_SIZE], close=False)
            with pytest.raises(FrameError, match="exceeds the limit of 999"):
                await read_frame(reader, max_payload=999)

    run(main)
