"""The goridge v3 frame, sans-IO: encode to bytes, decode from bytes split anywhere.

Room: protocol. Imports only `rrd.errors` and the standard library.

Layout (little-endian), as RoadRunner and the PHP worker library write it:
byte 0 version << 4 | HL (header words, 3 + options); 1 flags; 2-5 payload length;
6-9 CRC32 of bytes 0-5; 10 stream bits; 11 reserved; then HL-3 uint32 options, then the payload.

Byte 11 is reserved by goridge for later use (a sequence id, its notes say); RoadRunner neither
sets nor checks it. rrd writes 0 there and keeps what a frame it reads holds, so that decoding
then encoding gives back the same bytes.
"""

from __future__ import annotations

import struct
import zlib
from enum import IntFlag

from rrd.errors import FrameError, FrameTooLarge, ScriptOpenError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every worker ~4 ms of its start: for the checker only
    from typing import Final

VERSION = 1
HEADER_SIZE = 12
MAX_OPTIONS = 10
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024
COULD_NOT_OPEN = b"Could not op"
"""The first 12 bytes PHP prints when it cannot open the worker script."""

_PREFIX = struct.Struct("<BBI")  # bytes 0-5, the part the CRC covers
_SUFFIX = struct.Struct("<IBB")  # CRC, stream bits, reserved
_HEADER = struct.Struct("<BBIIBB")
_OPTIONS = [struct.Struct(f"<{n}I") for n in range(MAX_OPTIONS + 1)]
_UINT32_MAX = 0xFFFFFFFF


class Flag(IntFlag):
    """Byte 1: what the payload is and how it is encoded."""

    NONE = 0
    CONTROL = 0x01
    CODEC_RAW = 0x04
    CODEC_JSON = 0x08
    CODEC_MSGPACK = 0x10
    CODEC_GOB = 0x20
    ERROR = 0x40
    CODEC_PROTO = 0x80


class Stream(IntFlag):
    """Byte 10: streaming and liveness bits."""

    NONE = 0
    STREAM = 0x01
    STOP = 0x02
    PING = 0x04
    PONG = 0x08


class Record:
    """A small value compared, hashed and shown field by field (its `__slots__`), immutable
    to the type checker.

    In place of typing.NamedTuple: the worker SDK imports this module, and typing would add
    ~4 ms to every worker's start, which is most of a crashed worker's recovery."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Frame(Record):
    """One goridge message. `options` are uint32s; at most ten. `reserved` is header byte 11."""

    __slots__ = ("payload", "flags", "options", "stream", "version", "reserved")  # noqa: RUF023

    def __init__(
        self,
        payload: bytes = b"",
        flags: Flag = Flag.NONE,
        options: tuple[int, ...] = (),
        stream: Stream = Stream.NONE,
        version: int = VERSION,
        reserved: int = 0,
    ) -> None:
        self.payload: Final = payload
        self.flags: Final = flags
        self.options: Final = options
        self.stream: Final = stream
        self.version: Final = version
        self.reserved: Final = reserved

    def encode(self) -> bytes:
        """The frame's bytes, header CRC computed last, ready for one `write`."""
        options = self.options
        payload = self.payload
        count = len(options)
        if count > MAX_OPTIONS:
            raise FrameError(f"a frame carries at most {MAX_OPTIONS} options, not {count}")
        length = len(payload)
        if length > _UINT32_MAX:
            raise FrameError(f"payload of {length} bytes does not fit a frame")
        try:
            prefix = _PREFIX.pack((self.version << 4) | (3 + count), self.flags, length)
            suffix = _SUFFIX.pack(zlib.crc32(prefix), self.stream, self.reserved)
            if count:
                return b"".join((prefix, suffix, _OPTIONS[count].pack(*options), payload))
        except struct.error as exc:
            raise FrameError(f"cannot encode frame: {exc}") from None
        return b"".join((prefix, suffix, payload))


class _Members(dict):  # type: ignore[type-arg]  # holds Flag or Stream members
    """Each byte value's flag member, made the first time it is seen: an enum lookup by
    value is slow, and making all 512 up front would cost every worker ~3 ms of its start."""

    def __init__(self, kind: type[IntFlag]) -> None:
        super().__init__()
        self.kind = kind

    def __missing__(self, value: int) -> IntFlag:
        member = self[value] = self.kind(value)
        return member


_FLAGS: dict[int, Flag] = _Members(Flag)
_STREAMS: dict[int, Stream] = _Members(Stream)


class Header(Record):
    """A validated 12-byte header: what follows it is `body_size` bytes."""

    __slots__ = ("version", "words", "flags", "length", "stream", "reserved")  # noqa: RUF023

    def __init__(
        self, version: int, words: int, flags: Flag, length: int, stream: Stream, reserved: int = 0
    ):
        self.version: Final = version
        self.words: Final = words
        self.flags: Final = flags
        self.length: Final = length
        self.stream: Final = stream
        self.reserved: Final = reserved

    @property
    def option_count(self) -> int:
        return self.words - 3

    @property
    def body_size(self) -> int:
        """Bytes after the header: options then payload."""
        return 4 * (self.words - 3) + self.length


def preview(data: bytes | bytearray | memoryview, limit: int = 40) -> str:
    """Printable form of raw bytes for an error message: ASCII as is, the rest as \\xNN."""
    chunk = bytes(data[:limit])
    text = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in chunk)
    return text + ("..." if len(data) > limit else "")


def parse_header(
    data: bytes | bytearray | memoryview, offset: int = 0, *, max_payload: int = DEFAULT_MAX_PAYLOAD
) -> Header:
    """Validate the 12 header bytes at `offset`; raise FrameError naming what is wrong."""
    if len(data) - offset < HEADER_SIZE:
        raw = bytes(data[offset : offset + HEADER_SIZE])
        raise FrameError(f"frame header cut short after {len(raw)} bytes: {preview(raw)!s}")
    first, flags, length, crc, stream, reserved = _HEADER.unpack_from(data, offset)
    if first >> 4 != VERSION or zlib.crc32(data[offset : offset + 6]) != crc:
        raw = bytes(data[offset : offset + HEADER_SIZE])
        if raw == COULD_NOT_OPEN:
            raise ScriptOpenError(bytes(data[offset:]).decode("utf-8", "replace"))
        if zlib.crc32(raw[:6]) != crc:
            raise FrameError(
                f"bad frame header CRC (the worker printed to stdout?): {preview(raw)}"
            )
        raise FrameError(f"unsupported frame version {first >> 4}: {preview(raw)}")
    words = first & 0x0F
    if words < 3 or words - 3 > MAX_OPTIONS:
        raw = bytes(data[offset : offset + HEADER_SIZE])
        raise FrameError(f"bad frame header length {words} words: {preview(raw)}")
    if length > max_payload:
        raise FrameTooLarge(f"frame payload of {length} bytes exceeds the limit of {max_payload}")
    return Header(VERSION, words, _FLAGS[flags], length, _STREAMS[stream], reserved)


def frame_from_body(header: Header, body: bytes | bytearray | memoryview) -> Frame:
    """Build the frame from its header and the `header.body_size` bytes after it."""
    count = header.words - 3
    options = _OPTIONS[count].unpack_from(body, 0) if count else ()
    return Frame(
        bytes(body[4 * count :]),
        header.flags,
        options,
        header.stream,
        header.version,
        header.reserved,
    )


class Decoder:
    """Incremental decoder: `feed` bytes as they arrive, get whole frames back.

    After a FrameError the decoder stays failed: the stream has lost its framing, and so has
    the worker that wrote it. The error carries, as `.frames`, the frames decoded before it.
    """

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._error: FrameError | None = None

    @property
    def pending(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Take the next bytes of the stream; return the frames they complete, in order."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        view: memoryview | None = None
        if buffer or type(data) is not bytes:
            buffer += data
            # Payloads are cut from a view: a bytearray slice would be copied twice.
            data = view = memoryview(buffer)
        frames: list[Frame] = []
        size = len(data)
        position = 0
        max_payload = self.max_payload
        unpack = _HEADER.unpack_from
        crc32 = zlib.crc32
        try:
            while size - position >= HEADER_SIZE:
                first, flags, length, crc, stream, reserved = unpack(data, position)
                words = first & 0x0F
                if (
                    first >> 4 != VERSION
                    or words < 3
                    or words > 3 + MAX_OPTIONS
                    or length > max_payload
                    or crc32(data[position : position + 6]) != crc
                ):
                    # parse_header raises for each of these, naming the fault.
                    parse_header(data, position, max_payload=max_payload)
                count = words - 3
                start = position + HEADER_SIZE + 4 * count
                end = start + length
                if end > size:
                    break
                options = _OPTIONS[count].unpack_from(data, position + HEADER_SIZE) if count else ()
                frames.append(
                    Frame(
                        bytes(data[start:end]),
                        _FLAGS[flags],
                        options,
                        _STREAMS[stream],
                        VERSION,
                        reserved,
                    )
                )
                position = end
        except FrameError as exc:
            exc.frames = list(frames)
            exc.rest = bytes(data[position:])
            self._error = exc
            raise
        finally:
            if view is not None:
                view.release()
                del buffer[:position]
            elif position < size:
                buffer += data[position:]
        return frames
