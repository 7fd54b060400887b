"""The codec against bytes captured from the real PHP worker library (tests/conformance)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from rrd.errors import FrameError, ScriptOpenError
from rrd.protocol.control import (
    Payload,
    is_retire_reply,
    is_stop_request,
    parse_control,
    parse_pid,
    payload_frame,
    pid_reply,
    pid_request,
    retire_reply,
    split_payload,
    stop_request,
)
from rrd.protocol.frame import HEADER_SIZE, Decoder, Flag, Frame, Stream

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance"
"""A copy of ../shared/conformance, kept in the repo so that no run can skip it."""

EXCHANGES = (
    "basic",
    "error",
    "lenient",
    "nohandshake",
    "ctl-unknown",
    "ctl-pid0",
    "ctl-notjson",
    "ctl-scalar",
    "no-options",
    "eof",
    "short-header",
    "truncated",
    "missing-script",
)
STREAMS = [f"{name}.{side}.bin" for name in EXCHANGES for side in ("to_worker", "from_worker")]
# README, "What a strict decoder makes of each stream": everything else decodes whole.
REJECTED = {"lenient.to_worker.bin", "missing-script.from_worker.bin"}
CUT_SHORT = {"short-header.to_worker.bin", "truncated.to_worker.bin"}
WHOLE = [name for name in STREAMS if name not in REJECTED | CUT_SHORT]
SERVER_PID = 27162
CONTROL_JSON = Flag.CONTROL | Flag.CODEC_JSON


def read(name: str) -> bytes:
    return (CONFORMANCE / name).read_bytes()


def decode(data: bytes) -> tuple[list[Frame], int]:
    """All whole frames of a stream fed at once, and the bytes left pending."""
    decoder = Decoder()
    frames = decoder.feed(data)
    return frames, decoder.pending


def decode_bytewise(data: bytes) -> tuple[list[Frame], int]:
    """The same stream fed one byte at a time."""
    decoder = Decoder()
    frames: list[Frame] = []
    for index in range(len(data)):
        frames += decoder.feed(data[index : index + 1])
    return frames, decoder.pending


def frame_offsets(frames: list[Frame]) -> list[int]:
    """Where each frame starts in the stream they were decoded from."""
    offsets, position = [], 0
    for frame in frames:
        offsets.append(position)
        position += HEADER_SIZE + 4 * len(frame.options) + len(frame.payload)
    return offsets


def assert_headers(data: bytes, frames: list[Frame]) -> None:
    """Every frame's header fields and CRC, read straight from the captured bytes."""
    for offset, frame in zip(frame_offsets(frames), frames, strict=True):
        first, flags, length, crc, stream, reserved = struct.unpack_from("<BBIIBB", data, offset)
        assert first == 0x10 | (3 + len(frame.options))
        assert flags == frame.flags
        assert length == len(frame.payload)
        assert crc == zlib.crc32(data[offset : offset + 6])
        assert stream == frame.stream == Stream.NONE
        assert reserved == 0
        assert frame.version == 1


def test_every_capture_is_covered() -> None:
    assert {path.name for path in CONFORMANCE.glob("*.bin")} == set(STREAMS)


@pytest.mark.parametrize("name", WHOLE)
def test_stream_decodes_whole_and_re_encodes(name: str) -> None:
    data = read(name)
    frames, pending = decode(data)
    assert frames and pending == 0
    assert_headers(data, frames)
    assert b"".join(frame.encode() for frame in frames) == data


@pytest.mark.parametrize("name", WHOLE + sorted(CUT_SHORT))
def test_stream_fed_bytewise_gives_the_same_frames(name: str) -> None:
    data = read(name)
    assert decode_bytewise(data) == decode(data)


@pytest.mark.parametrize("name", sorted(CUT_SHORT))
def test_cut_short_stream_holds_the_partial_frame(name: str) -> None:
    data = read(name)
    frames, pending = decode(data)
    assert frames == [pid_request(SERVER_PID)]
    assert_headers(data, frames)
    whole = len(frames[0].encode())
    assert data[:whole] == frames[0].encode()
    assert pending == len(data) - whole > 0


def test_short_header_leaves_fewer_than_a_header() -> None:
    _frames, pending = decode(read("short-header.to_worker.bin"))
    assert pending < HEADER_SIZE


def test_truncated_promises_more_payload_than_arrives() -> None:
    data = read("truncated.to_worker.bin")
    _frames, pending = decode(data)
    length = int.from_bytes(data[-pending + 2 : -pending + 6], "little")
    assert pending < HEADER_SIZE + 4 + length


def test_lenient_to_worker_is_rejected_after_the_pid_request() -> None:
    data = read("lenient.to_worker.bin")
    with pytest.raises(FrameError, match="CRC") as caught:
        Decoder().feed(data)
    assert caught.value.frames == [pid_request(SERVER_PID)]
    assert str(caught.value).isprintable()


def test_lenient_to_worker_bytewise_is_rejected_at_the_same_place() -> None:
    data = read("lenient.to_worker.bin")
    decoder = Decoder()
    frames: list[Frame] = []
    with pytest.raises(FrameError, match="CRC") as caught:
        for index in range(len(data)):
            frames += decoder.feed(data[index : index + 1])
    assert frames + list(caught.value.frames) == [pid_request(SERVER_PID)]
    assert index == len(pid_request(SERVER_PID).encode()) + HEADER_SIZE - 1


def test_missing_script_reports_php_message() -> None:
    data = read("missing-script.from_worker.bin")
    with pytest.raises(ScriptOpenError) as caught:
        Decoder().feed(data)
    assert caught.value.text == data.decode()
    assert str(caught.value) == "Could not open input file: php/does-not-exist.php"
    assert caught.value.frames == []


def test_missing_script_bytewise_is_reported_at_the_header() -> None:
    # A sans-IO decoder cannot know where PHP's line ends; read_frame reads the rest of it.
    data = read("missing-script.from_worker.bin")
    decoder = Decoder()
    with pytest.raises(ScriptOpenError) as caught:
        for index in range(len(data)):
            decoder.feed(data[index : index + 1])
    assert caught.value.text == "Could not op"


# --- the basic exchange, field by field ---


def test_basic_to_worker() -> None:
    frames, _ = decode(read("basic.to_worker.bin"))
    assert [frame.flags for frame in frames] == [CONTROL_JSON] + [Flag.CODEC_RAW] * 4 + [
        CONTROL_JSON
    ]
    assert frames[0] == pid_request(SERVER_PID)
    assert frames[0].payload == b'{"pid":27162}'
    assert parse_pid(frames[0]) == SERVER_PID
    assert [frame.options for frame in frames] == [(), (10,), (0,), (3,), (0,), ()]
    assert [split_payload(frame) for frame in frames[1:5]] == [
        Payload(body=b"hello", context=b'{"tick":1}'),
        Payload(body=b"no-context", context=b""),
        Payload(body=b"\x00\x01\xff binary", context=b"ctx"),
        Payload(body=b"", context=b""),
    ]
    for frame in frames[1:5]:
        assert payload_frame(split_payload(frame), Flag.CODEC_RAW) == frame
    assert frames[5] == stop_request()
    assert is_stop_request(frames[5])
    assert not any(is_stop_request(frame) for frame in frames[:5])


def test_basic_from_worker() -> None:
    frames, _ = decode(read("basic.from_worker.bin"))
    assert frames[0] == pid_reply(27203)
    assert frames[0].flags == Flag.CONTROL
    assert parse_pid(frames[0]) == 27203
    replies = frames[1:]
    assert [frame.flags for frame in replies] == [Flag.NONE] * 4
    assert [frame.options for frame in replies] == [(10,), (0,), (3,), (0,)]
    assert [split_payload(frame) for frame in replies] == [
        Payload(body=b"OK:hello", context=b'{"tick":1}'),
        Payload(body=b"OK:no-context", context=b""),
        Payload(body=b"OK:\x00\x01\xff binary", context=b"ctx"),
        Payload(body=b"OK:", context=b""),
    ]
    for frame in replies:
        assert payload_frame(split_payload(frame)) == frame
        assert not is_retire_reply(split_payload(frame))


def test_error_to_worker() -> None:
    frames, _ = decode(read("error.to_worker.bin"))
    assert frames[0] == pid_request(SERVER_PID)
    assert [split_payload(frame) for frame in frames[1:]] == [
        Payload(body=b"ERR:something failed", context=b"{}"),
        Payload(body=b"again", context=b"{}"),
        Payload(body=b"STOPME"),
        Payload(body=b"ECHO"),
        Payload(body=b"THROW"),
    ]


def test_error_from_worker() -> None:
    frames, _ = decode(read("error.from_worker.bin"))
    assert len(frames) == 5
    assert parse_pid(frames[0]) == 27205
    error = frames[1]
    assert error == Frame(b"something failed", Flag.ERROR)
    assert error.flags == 0x40 and error.options == ()
    assert split_payload(frames[2]) == Payload(body=b"OK:again", context=b"{}")
    retire = frames[3]
    assert retire.flags == Flag.NONE and retire.options == (13,)
    assert retire.payload == b'{"stop":true}'
    assert is_retire_reply(split_payload(retire))
    assert retire == retire_reply()
    # ECHO went to stderr; the reply itself is ordinary.
    assert split_payload(frames[4]) == Payload(body=b"echoed")


def test_nohandshake() -> None:
    sent, _ = decode(read("nohandshake.to_worker.bin"))
    assert split_payload(sent[0]) == Payload(body=b"first", context=b"c")
    assert sent[1] == stop_request()
    received, _ = decode(read("nohandshake.from_worker.bin"))
    assert [split_payload(frame) for frame in received] == [Payload(b"OK:first", b"c")]


def test_lenient_from_worker_replies() -> None:
    frames, _ = decode(read("lenient.from_worker.bin"))
    assert [parse_pid(frame) for frame in (frames[0], frames[7], frames[8])] == [27211] * 3
    assert [split_payload(frame).body for frame in frames[1:7]] == [
        b"OK:badcrc",
        b"OK:v0",
        b"OK:twoopts",
        b"OK:",
        b"OK:after-skip",
        b"OK:ping",
    ]


HANDSHAKES = [
    f"{name}.from_worker.bin" for name in EXCHANGES if name not in ("nohandshake", "missing-script")
]


@pytest.mark.parametrize("name", HANDSHAKES)
def test_every_worker_answers_the_handshake_first(name: str) -> None:
    frames, _ = decode(read(name))
    assert frames[0].flags == Flag.CONTROL
    assert parse_pid(frames[0]) > 0


@pytest.mark.parametrize(
    ("exchange", "control"),
    [
        ("ctl-unknown", {"foo": 1}),
        ("ctl-pid0", {"pid": 0}),
        ("ctl-notjson", None),
        ("ctl-scalar", None),
    ],
)
def test_bad_control_frames_fail_parse_pid(exchange: str, control: object) -> None:
    frames, _ = decode(read(f"{exchange}.to_worker.bin"))
    assert frames[0] == pid_request(SERVER_PID)
    bad = frames[1]
    assert bad.flags & Flag.CONTROL
    if control is None:
        with pytest.raises(FrameError, match="not a JSON object"):
            parse_control(bad)
    else:
        assert parse_control(bad) == control
    with pytest.raises(FrameError):
        parse_pid(bad)


def test_no_options_frame_fails_split_payload() -> None:
    frames, _ = decode(read("no-options.to_worker.bin"))
    assert frames[1] == Frame(b"noopts")
    with pytest.raises(FrameError, match="exactly 1 option"):
        split_payload(frames[1])


def test_missing_script_handshake_is_not_compact_but_valid() -> None:
    frames, _ = decode(read("missing-script.to_worker.bin"))
    assert frames == [Frame(b'{"pid": 27162}', CONTROL_JSON)]
    assert parse_pid(frames[0]) == SERVER_PID
