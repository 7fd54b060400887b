"""Control messages and payload frames: pid handshake, stop, exec payloads, retire replies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrd.errors import FrameError
from rrd.protocol.control import (
    CONTROL_JSON,
    STOP_JSON,
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
from rrd.protocol.frame import Decoder, Flag, Frame

# --- the pid handshake ---


def test_pid_request_bytes() -> None:
    wire = pid_request(12345).encode()
    assert wire == bytes.fromhex("13 09 0d 00 00 00 3a 6b fa cb 00 00") + b'{"pid":12345}'


def test_pid_reply_bytes() -> None:
    # As captured from the PHP library (basic.from_worker.bin): flags CONTROL only.
    wire = pid_reply(27203).encode()
    assert wire == bytes.fromhex("13 01 0d 00 00 00 fb 20 8a fb 00 00") + b'{"pid":27203}'


def test_stop_request_bytes() -> None:
    wire = stop_request().encode()
    assert wire == bytes.fromhex("13 09 0d 00 00 00 3a 6b fa cb 00 00") + b'{"stop":true}'


@pytest.mark.parametrize("pid", [0, -1, True, False, 1.5, "12"])
def test_pid_request_needs_a_positive_int(pid: object) -> None:
    with pytest.raises(ValueError, match="positive"):
        pid_request(pid)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("frame", "pid"),
    [
        (pid_reply(1), 1),
        (pid_request(7), 7),
        (Frame(b'{"pid":99,"extra":[1]}', CONTROL_JSON), 99),
        (Frame(b'{"pid": 27162}', CONTROL_JSON), 27162),
    ],
)
def test_parse_pid_accepts(frame: Frame, pid: int) -> None:
    assert parse_pid(frame) == pid


@pytest.mark.parametrize(
    "payload",
    [
        b'{"pid":0}',
        b'{"pid":-5}',
        b'{"pid":true}',
        b'{"pid":false}',
        b'{"pid":"123"}',
        b'{"pid":12.0}',
        b'{"pid":null}',
        b'{"pid":[1]}',
        b'{"Pid":1}',
        b"{}",
        b"[1]",
        b"123",
        b'"pid"',
        b"null",
        b"not json",
        b"",
        b'{"pid":1',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_parse_pid_rejects(payload: bytes) -> None:
    with pytest.raises(FrameError):
        parse_pid(Frame(payload, Flag.CONTROL))


@pytest.mark.parametrize("flags", [Flag.NONE, Flag.CODEC_JSON, Flag.ERROR])
def test_parse_pid_needs_the_control_flag(flags: Flag) -> None:
    with pytest.raises(FrameError, match="expected a control frame"):
        parse_pid(Frame(b'{"pid":1}', flags))


def test_parse_control_returns_the_object() -> None:
    assert parse_control(Frame(b'{"a":{"b":[1,2]}}', Flag.CONTROL)) == {"a": {"b": [1, 2]}}


def test_parse_control_preview_is_printable() -> None:
    with pytest.raises(FrameError) as caught:
        parse_control(Frame(b"\x00\x01oops\n", Flag.CONTROL))
    assert str(caught.value).isprintable()


@given(st.integers(1, 2**31 - 1))
def test_pid_round_trip(pid: int) -> None:
    for frame in (pid_request(pid), pid_reply(pid)):
        (decoded,) = Decoder().feed(frame.encode())
        assert parse_pid(decoded) == pid


def parsed_by_json(payload: bytes) -> object:
    """What `parse_control` would answer with no fast path: the object, or FrameError."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError):
        return FrameError
    return message if isinstance(message, dict) else FrameError


def parsed(payload: bytes) -> object:
    try:
        return parse_control(Frame(payload, Flag.CONTROL))
    except FrameError:
        return FrameError


CONTROL_LIKE = st.one_of(
    st.binary(max_size=24),
    st.builds(lambda n: b'{"pid":%d}' % n, st.integers(-(2**40), 2**40)),
    st.builds(
        lambda head, body, tail: head + body + tail,
        st.sampled_from([b'{"pid":', b'{"stop":', b'{"pid": ', b"{"]),
        st.text("0123456789-+.eE ", max_size=12).map(str.encode) | st.binary(max_size=6),
        st.sampled_from([b"}", b"} ", b"", b",}", b"}}"]),
    ),
    st.sampled_from([STOP_JSON, b'{"stop":true }', b'{"pid":00}', b'{"pid":01}', b'{"pid":0}']),
)


@given(CONTROL_LIKE)
def test_the_handshake_fast_path_agrees_with_json(payload: bytes) -> None:
    """`{"pid":N}` and `{"stop":true}` are read without json: never with another outcome."""
    assert parsed(payload) == parsed_by_json(payload)


# --- stop ---


def test_is_stop_request() -> None:
    assert is_stop_request(stop_request())
    assert is_stop_request(Frame(b'{"stop":true}', Flag.CONTROL))
    assert not is_stop_request(Frame(b'{"stop":false}', CONTROL_JSON))
    assert not is_stop_request(Frame(b'{"stop":1}', CONTROL_JSON))
    assert not is_stop_request(Frame(STOP_JSON))
    assert not is_stop_request(Frame(b"garbage", CONTROL_JSON))
    assert not is_stop_request(pid_request(1))


# --- payload frames ---


def test_payload_frame_layout() -> None:
    frame = payload_frame(Payload(body=b"{}", context=b'{"lastTick":0}'))
    assert frame == Frame(b'{"lastTick":0}{}', Flag.NONE, (14,))
    assert payload_frame(Payload(b"x"), Flag.CODEC_RAW).flags == Flag.CODEC_RAW


def test_split_payload() -> None:
    frame = Frame(b"ctxbody", Flag.NONE, (3,))
    assert split_payload(frame) == Payload(body=b"body", context=b"ctx")
    assert split_payload(Frame(b"ctx", Flag.NONE, (3,))) == Payload(body=b"", context=b"ctx")
    assert split_payload(Frame(b"", Flag.NONE, (0,))) == Payload()


@pytest.mark.parametrize("options", [(), (1, 2), (0, 0, 0)])
def test_split_payload_needs_exactly_one_option(options: tuple[int, ...]) -> None:
    with pytest.raises(FrameError, match="exactly 1 option"):
        split_payload(Frame(b"abc", Flag.NONE, options))


@pytest.mark.parametrize("size", [4, 5, 0xFFFFFFFF])
def test_split_payload_rejects_context_past_payload(size: int) -> None:
    with pytest.raises(FrameError, match="exceeds the payload"):
        split_payload(Frame(b"abc", Flag.NONE, (size,)))


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_payload_round_trip(body: bytes, context: bytes) -> None:
    payload = Payload(body=body, context=context)
    (decoded,) = Decoder().feed(payload_frame(payload).encode())
    assert split_payload(decoded) == payload


def test_payload_json() -> None:
    payload = Payload(body=b'{"tick":3}', context=b'{"lastTick":2}')
    assert payload.json() == {"tick": 3}
    assert payload.context_json() == {"lastTick": 2}
    assert Payload(body=b"1").context_json() is None


# --- retiring ---


def test_retire_reply() -> None:
    frame = retire_reply()
    assert frame == Frame(b'{"stop":true}', Flag.NONE, (13,))
    assert is_retire_reply(split_payload(frame))


@pytest.mark.parametrize(
    "payload",
    [
        Payload(body=b"x", context=STOP_JSON),
        Payload(body=STOP_JSON),
        Payload(context=b'{"stop": true}'),
        Payload(context=b'{"stop":false}'),
        Payload(),
    ],
)
def test_not_a_retire_reply(payload: Payload) -> None:
    assert not is_retire_reply(payload)
