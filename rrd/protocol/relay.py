"""Frames over asyncio streams: the server's side of a worker's stdin/stdout.

Room: protocol. Imports only `rrd.protocol.frame`, `rrd.errors` and the standard library.
"""

from __future__ import annotations

import asyncio
import zlib

from rrd.errors import FrameError, ScriptOpenError
from rrd.protocol.frame import (
    COULD_NOT_OPEN,
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    Frame,
    frame_from_body,
    parse_header,
    preview,
)

SCRIPT_MESSAGE_LIMIT = 4096
"""How much of PHP's `Could not open input file` text is read to report it."""

TEXT_PREVIEW = 100
"""How many more bytes of a worker's stray stdout text an error message shows."""


async def read_frame(
    reader: asyncio.StreamReader, *, max_payload: int = DEFAULT_MAX_PAYLOAD
) -> Frame:
    """Read one whole, validated frame.

    Raises EOFError when the stream ends cleanly before a frame starts, FrameError for a cut
    or invalid frame, and ScriptOpenError (with PHP's text) for `Could not open input file`.
    """
    try:
        header_bytes = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError("relay closed") from None
        raise FrameError(f"relay closed inside a frame header: {preview(exc.partial)}") from None
    if header_bytes == COULD_NOT_OPEN:
        # PHP prints one line and exits; a pipe may deliver it in pieces.
        text = header_bytes
        while b"\n" not in text and len(text) < SCRIPT_MESSAGE_LIMIT:
            chunk = await reader.read(SCRIPT_MESSAGE_LIMIT - len(text))
            if not chunk:
                break
            text += chunk
        raise ScriptOpenError(text.decode("utf-8", "replace"))
    try:
        header = parse_header(header_bytes, max_payload=max_payload)
    except FrameError as exc:
        if zlib.crc32(header_bytes[:6]) == int.from_bytes(header_bytes[6:10], "little"):
            raise
        # Text, not a frame: show the person the rest of the line the worker printed.
        raise FrameError(f"{exc}{preview(await _arriving(reader), TEXT_PREVIEW)}") from None
    try:
        body = await reader.readexactly(header.body_size)
    except asyncio.IncompleteReadError as exc:
        raise FrameError(
            f"relay closed inside a frame: {len(exc.partial)} of {header.body_size} bytes"
        ) from None
    return frame_from_body(header, body)


async def _arriving(reader: asyncio.StreamReader) -> bytes:
    """Whatever follows within a moment (the rest of a stray line), without waiting for more."""
    try:
        async with asyncio.timeout(0.05):
            return await reader.read(TEXT_PREVIEW)
    except TimeoutError:
        return b""


def write_frame(writer: asyncio.StreamWriter, frame: Frame) -> None:
    """Queue the frame as a single write (PHP reads the 12-byte header in one read)."""
    writer.write(frame.encode())
