"""The goridge frame codec: exact bytes, round trips, and what garbage does to the decoder."""

from __future__ import annotations

import itertools
import struct
import zlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rrd.errors import FrameError, ScriptOpenError
from rrd.protocol.frame import (
    COULD_NOT_OPEN,
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    MAX_OPTIONS,
    VERSION,
    Decoder,
    Flag,
    Frame,
    Header,
    Stream,
    frame_from_body,
    parse_header,
    preview,
)

MiB = 1024 * 1024
UINT32_MAX = 0xFFFFFFFF


def header_crc_ok(data: bytes, offset: int = 0) -> bool:
    """Whether the CRC field at `offset` is the CRC32 of bytes 0-5 there."""
    (crc,) = struct.unpack_from("<I", data, offset + 6)
    return bool(zlib.crc32(data[offset : offset + 6]) == crc)


def decode_all(data: bytes, **kwargs: int) -> list[Frame]:
    """Feed everything at once; insist nothing is left over."""
    decoder = Decoder(**kwargs)
    frames = decoder.feed(data)
    assert decoder.pending == 0
    return frames


# --- exact bytes: the examples in protocol.md, checked against the real PHP library ---


def test_pid_request_example() -> None:
    frame = Frame(b'{"pid":12345}', Flag.CONTROL | Flag.CODEC_JSON)
    assert frame.encode() == bytes.fromhex("13 09 0d 00 00 00 3a 6b fa cb 00 00") + b'{"pid":12345}'


def test_exec_example() -> None:
    context, body = b'{"lastTick": 0}', b'{"tick": 0}'
    frame = Frame(context + body, Flag.NONE, (len(context),))
    expected = bytes.fromhex("14 00 1a 00 00 00 d5 56 21 16 00 00 0f 00 00 00") + context + body
    assert frame.encode() == expected


def test_error_reply_example() -> None:
    frame = Frame(b"boom", Flag.ERROR)
    assert frame.encode() == bytes.fromhex("13 40 04 00 00 00 88 1e 11 e3 00 00 62 6f 6f 6d")


def test_examples_decode_back() -> None:
    wire = bytes.fromhex("13 40 04 00 00 00 88 1e 11 e3 00 00 62 6f 6f 6d")
    assert decode_all(wire) == [Frame(b"boom", Flag.ERROR)]


def test_header_layout() -> None:
    frame = Frame(b"xyz", Flag.CODEC_RAW, (7, UINT32_MAX), Stream.STREAM | Stream.PING)
    wire = frame.encode()
    assert wire[0] == 0x15
    assert wire[1] == 0x04
    assert wire[2:6] == (3).to_bytes(4, "little")
    assert header_crc_ok(wire)
    assert wire[10:12] == b"\x05\x00"
    assert wire[12:20] == b"\x07\x00\x00\x00\xff\xff\xff\xff"
    assert wire[20:] == b"xyz"


def test_empty_frame() -> None:
    wire = Frame().encode()
    assert len(wire) == HEADER_SIZE and wire[0] == 0x13 and header_crc_ok(wire)
    assert decode_all(wire) == [Frame()]


# --- encode refuses what cannot be a frame ---


@pytest.mark.parametrize(
    "frame",
    [
        Frame(options=tuple(range(MAX_OPTIONS + 1))),
        Frame(options=(UINT32_MAX + 1,)),
        Frame(options=(-1,)),
        Frame(version=16),
        Frame(version=-1),
        Frame(flags=256),  # type: ignore[arg-type]
        Frame(stream=256),  # type: ignore[arg-type]
    ],
    ids=[
        "11 options",
        "option > uint32",
        "negative option",
        "version 16",
        "version -1",
        "flags 256",
        "stream 256",
    ],
)
def test_encode_rejects(frame: Frame) -> None:
    with pytest.raises(FrameError):
        frame.encode()


def test_ten_options_is_the_maximum() -> None:
    frame = Frame(b"p", options=tuple(range(MAX_OPTIONS)))
    wire = frame.encode()
    assert wire[0] & 0x0F == 13
    assert decode_all(wire) == [frame]


# --- parse_header: each fault named ---


def test_parse_header_fields() -> None:
    wire = Frame(b"abcd", Flag.CONTROL, (1, 2), Stream.STOP).encode()
    header = parse_header(wire)
    assert header == Header(1, 5, Flag.CONTROL, 4, Stream.STOP)
    assert header.option_count == 2
    assert header.body_size == 12
    assert frame_from_body(header, wire[HEADER_SIZE:]) == Frame(
        b"abcd", Flag.CONTROL, (1, 2), Stream.STOP
    )


def test_parse_header_at_offset() -> None:
    wire = b"junk" + Frame(b"x").encode()
    assert parse_header(wire, 4).length == 1


def _with_prefix(first: int, flags: int = 0, length: int = 0) -> bytes:
    prefix = struct.pack("<BBI", first, flags, length)
    return prefix + struct.pack("<IBB", zlib.crc32(prefix), 0, 0)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (_with_prefix(0x03), "version 0"),
        (_with_prefix(0x23), "version 2"),
        (_with_prefix(0x12), "header length 2"),
        (_with_prefix(0x10), "header length 0"),
        (_with_prefix(0x1E), "header length 14"),
        (_with_prefix(0x1F), "header length 15"),
        (b"\x13\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "CRC"),
        (b"\x13\x00", "cut short after 2"),
    ],
)
def test_parse_header_rejects(data: bytes, words: str) -> None:
    with pytest.raises(FrameError, match=words):
        parse_header(data)


def test_parse_header_max_payload() -> None:
    wire = Frame(b"x" * 100).encode()
    assert parse_header(wire, max_payload=100).length == 100
    with pytest.raises(FrameError, match="exceeds the limit of 99"):
        parse_header(wire, max_payload=99)


def test_parse_header_could_not_open() -> None:
    text = b"Could not open input file: w.php\n"
    with pytest.raises(ScriptOpenError) as caught:
        parse_header(text)
    assert caught.value.text == text.decode()
    assert str(caught.value) == "Could not open input file: w.php"
    assert text[:HEADER_SIZE] == COULD_NOT_OPEN


def test_bad_crc_message_is_a_printable_preview() -> None:
    with pytest.raises(FrameError) as caught:
        parse_header(b"PHP W\x00\xff\\ning: more")
    message = str(caught.value)
    assert message.isprintable()
    assert message.endswith("PHP W\\x00\\xff\\x5cning")


def test_preview() -> None:
    assert preview(b"ab\ncd") == "ab\\x0acd"
    assert preview(b"x" * 50, limit=4) == "xxxx..."
    assert preview(memoryview(b"\x7f ok")) == "\\x7f ok"


# --- the incremental decoder ---


def test_decoder_holds_partial_frames() -> None:
    wire = Frame(b"hello", Flag.NONE, (2,)).encode()
    decoder = Decoder()
    assert decoder.feed(wire[:5]) == []
    assert decoder.pending == 5
    assert decoder.feed(wire[5:-1]) == []
    assert decoder.pending == len(wire) - 1
    assert decoder.feed(wire[-1:]) == [Frame(b"hello", Flag.NONE, (2,))]
    assert decoder.pending == 0


def test_decoder_accepts_bytearray_and_memoryview() -> None:
    frames = [Frame(b"a", Flag.CONTROL), Frame(b"bc", Flag.NONE, (1,))]
    wire = b"".join(frame.encode() for frame in frames)
    assert Decoder().feed(bytearray(wire)) == frames
    assert Decoder().feed(memoryview(wire)) == frames
    decoded = Decoder().feed(memoryview(wire))
    assert all(type(frame.payload) is bytes for frame in decoded)


def test_decoder_keeps_the_tail_after_whole_frames() -> None:
    first = Frame(b"one").encode()
    second = Frame(b"two").encode()
    decoder = Decoder()
    assert decoder.feed(first + second[:7]) == [Frame(b"one")]
    assert decoder.pending == 7
    assert decoder.feed(second[7:]) == [Frame(b"two")]


def test_decoder_error_carries_earlier_frames_and_sticks() -> None:
    good = Frame(b"ok").encode()
    decoder = Decoder()
    with pytest.raises(FrameError) as caught:
        decoder.feed(good + good + b"garbage garbage")
    assert caught.value.frames == [Frame(b"ok"), Frame(b"ok")]
    with pytest.raises(FrameError) as again:
        decoder.feed(good)
    assert again.value is caught.value


def test_decoder_error_after_buffered_bytes() -> None:
    good = Frame(b"ok", Flag.NONE, (1,)).encode()
    decoder = Decoder()
    assert decoder.feed(good[:3]) == []
    with pytest.raises(FrameError, match="CRC") as caught:
        decoder.feed(good[3:] + b"\x13" * 12)
    assert caught.value.frames == [Frame(b"ok", Flag.NONE, (1,))]


def test_decoder_max_payload() -> None:
    wire = Frame(b"x" * 64).encode()
    assert Decoder(max_payload=64).feed(wire) == [Frame(b"x" * 64)]
    decoder = Decoder(max_payload=63)
    with pytest.raises(FrameError, match="exceeds the limit"):
        # The header alone trips the limit: the body is never buffered.
        decoder.feed(wire[:HEADER_SIZE])


def test_decoder_default_limit() -> None:
    assert Decoder().max_payload == DEFAULT_MAX_PAYLOAD
    header = _with_prefix(0x13, 0, DEFAULT_MAX_PAYLOAD + 1)
    with pytest.raises(FrameError, match="exceeds the limit"):
        Decoder().feed(header)


def test_decoder_could_not_open() -> None:
    text = b"Could not open input file: worker.php\n"
    with pytest.raises(ScriptOpenError) as caught:
        Decoder().feed(text)
    assert caught.value.text == text.decode()


def test_decoder_large_payload_in_small_chunks() -> None:
    frame = Frame(bytes(range(256)) * 4096, Flag.CODEC_RAW, (5,))
    wire = frame.encode()
    decoder = Decoder()
    out: list[Frame] = []
    for start in range(0, len(wire), 4093):
        out += decoder.feed(wire[start : start + 4093])
    assert out == [frame]
    assert decoder.pending == 0


# --- properties ---

uint32 = st.integers(0, UINT32_MAX)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Mostly small arbitrary bytes; now and then a large one, built cheaply from a pattern."""
    if draw(st.integers(0, 19)):
        return draw(st.binary(max_size=300))
    size = draw(st.integers(0, MiB))
    pattern = draw(st.binary(min_size=1, max_size=16))
    return (pattern * (size // len(pattern) + 1))[:size]


frames = st.builds(
    Frame,
    payload=payloads(),
    flags=st.integers(0, 255).map(Flag),
    options=st.lists(uint32, max_size=MAX_OPTIONS).map(tuple),
    stream=st.integers(0, 255).map(Stream),
    version=st.just(VERSION),
)


@given(frames)
@example(Frame(b"\x00" * MiB, Flag.CODEC_RAW, (MiB,)))
@example(Frame(b"\xff" * (MiB - 1), Flag(255), tuple([UINT32_MAX] * 10), Stream(255)))
@settings(deadline=None)
def test_round_trip(frame: Frame) -> None:
    wire = frame.encode()
    assert len(wire) == HEADER_SIZE + 4 * len(frame.options) + len(frame.payload)
    assert header_crc_ok(wire)
    assert decode_all(wire) == [frame]
    header = parse_header(wire)
    assert frame_from_body(header, wire[HEADER_SIZE:]) == frame
    decoded = decode_all(wire)[0]
    assert type(decoded.flags) is Flag and type(decoded.stream) is Stream
    assert type(decoded.payload) is bytes and type(decoded.options) is tuple
    assert decoded.encode() == wire


@given(st.binary(max_size=600))
def test_random_bytes_decode_or_raise_frame_error(data: bytes) -> None:
    decoder = Decoder()
    try:
        decoded = decoder.feed(data)
    except FrameError as exc:
        decoded = [frame for frame in exc.frames if isinstance(frame, Frame)]
        assert len(decoded) == len(exc.frames)
    wire = b"".join(frame.encode() for frame in decoded)
    assert data.startswith(wire)


@st.composite
def mangled_streams(draw: st.DrawFn) -> bytes:
    """Valid frames with a byte changed, a cut, or garbage spliced in: deeper paths than noise."""
    wire = bytearray(b"".join(f.encode() for f in draw(st.lists(frames, max_size=3))))
    for _ in range(draw(st.integers(0, 3))):
        if not wire:
            break
        at = draw(st.integers(0, len(wire) - 1))
        action = draw(st.sampled_from(["set", "cut", "splice"]))
        if action == "set":
            wire[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del wire[at:]
        else:
            wire[at:at] = draw(st.binary(min_size=1, max_size=20))
    return bytes(wire)


@given(mangled_streams(), st.lists(st.integers(1, 64), max_size=20))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mangled_streams_never_crash(data: bytes, sizes: list[int]) -> None:
    decoder = Decoder(max_payload=2 * MiB)
    position = 0
    try:
        for size in [*sizes, len(data)]:
            decoder.feed(data[position : position + size])
            position += size
    except FrameError:
        pass


@given(frames, st.integers(0, 9 * 8 - 1))
@settings(deadline=None)
def test_flipped_header_bit_is_rejected(frame: Frame, bit: int) -> None:
    wire = bytearray(frame.encode())
    wire[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError):
        Decoder(max_payload=UINT32_MAX).feed(bytes(wire))


@given(
    st.lists(frames, min_size=1, max_size=8),
    st.lists(st.integers(0, 10**9), max_size=30),
    st.lists(st.sampled_from([bytes, bytearray, memoryview]), min_size=1),
)
@settings(deadline=None)
def test_any_split_decodes_identically(
    originals: list[Frame], cuts: list[int], kinds: list[type]
) -> None:
    wire = b"".join(frame.encode() for frame in originals)
    points = sorted({cut % (len(wire) + 1) for cut in cuts} | {0, len(wire)})
    decoder = Decoder()
    out: list[Frame] = []
    for index, (start, end) in enumerate(itertools.pairwise(points)):
        out += decoder.feed(kinds[index % len(kinds)](wire[start:end]))
    assert out == originals
    assert decoder.pending == 0


@given(st.integers(0, 1000), st.integers(0, 1000))
def test_max_payload_enforced(limit: int, size: int) -> None:
    wire = Frame(b"\x01" * size).encode()
    decoder = Decoder(max_payload=limit)
    if size <= limit:
        assert decoder.feed(wire) == [Frame(b"\x01" * size)]
    else:
        with pytest.raises(FrameError, match="exceeds the limit"):
            decoder.feed(wire)
