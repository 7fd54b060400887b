"""RPC framing for the control socket: what PHP's RPC client sends and goridge answers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrd.errors import FrameError, RrdError
from rrd.protocol.frame import Decoder, Flag, Frame
from rrd.protocol.rpc import (
    RpcError,
    RpcReply,
    RpcRequest,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
    parse_reply,
)

PHP_WORKERS_CALL = (
    bytes.fromhex("15 08 18 00 00 00 3a 06 04 47 00 00 01 00 00 00 10 00 00 00")
    + b'informer.Workers"ticker"'
)


def test_php_informer_workers_call_byte_for_byte() -> None:
    assert encode_request(1, "informer.Workers", "ticker").encode() == PHP_WORKERS_CALL


def test_decode_php_call() -> None:
    (frame,) = Decoder().feed(PHP_WORKERS_CALL)
    assert decode_request(frame) == RpcRequest(1, "informer.Workers", "ticker", Flag.CODEC_JSON)


def test_request_json_is_compact() -> None:
    frame = encode_request(2, "resetter.Reset", {"name": "ticker", "ids": [1, 2]})
    assert frame.flags == Flag.CODEC_JSON
    assert frame.options == (2, 14)
    assert frame.payload == b'resetter.Reset{"name":"ticker","ids":[1,2]}'


def test_reply_echoes_seq_method_and_codec() -> None:
    result = {"workers": [{"pid": 42, "status": 1, "numExecs": 3, "statusStr": "ready"}]}
    frame = encode_reply(7, "informer.Workers", result)
    assert frame.flags == Flag.CODEC_JSON
    assert frame.options == (7, 16)
    assert frame.payload.startswith(b"informer.Workers{")
    (decoded,) = Decoder().feed(frame.encode())
    assert decode_reply(decoded) == result
    assert decode_reply(decoded, seq=7) == result
    assert parse_reply(decoded) == RpcReply(7, "informer.Workers", result, Flag.CODEC_JSON)


def test_error_reply() -> None:
    frame = encode_error(3, "resetter.Reset", "no such plugin: nope")
    assert frame.flags == Flag.CODEC_JSON | Flag.ERROR
    assert frame.options == (3, 14)
    assert frame.payload == b"resetter.Resetno such plugin: nope"
    (decoded,) = Decoder().feed(frame.encode())
    with pytest.raises(RpcError) as caught:
        decode_reply(decoded)
    assert str(caught.value) == "no such plugin: nope"
    assert caught.value.message == "no such plugin: nope"
    assert caught.value.seq == 3
    assert caught.value.method == "resetter.Reset"
    assert isinstance(caught.value, RrdError)


def test_error_reply_with_only_the_error_flag() -> None:
    # Any codec bits, or none: ERROR alone decides.
    frame = Frame(b"informer.Listboom", Flag.ERROR, (0, 13))
    with pytest.raises(RpcError, match=r"^boom$"):
        decode_reply(frame)


def test_empty_error_text_still_says_something() -> None:
    with pytest.raises(RpcError, match=r"informer\.List"):
        decode_reply(encode_error(1, "informer.List", ""))


def test_reply_to_another_call() -> None:
    frame = encode_reply(5, "informer.List", ["ticker"])
    with pytest.raises(FrameError, match="expected call 6"):
        decode_reply(frame, seq=6)
    with pytest.raises(FrameError, match="expected call 6"):
        decode_reply(encode_error(5, "informer.List", "boom"), seq=6)


def test_empty_json_body_is_none() -> None:
    assert decode_request(Frame(b"informer.List", Flag.CODEC_JSON, (0, 13))).body is None
    assert decode_reply(Frame(b"informer.List", Flag.CODEC_JSON, (0, 13))) is None


def test_raw_codec() -> None:
    frame = encode_request(9, "kv.Set", b"\x00\xffraw", codec=Flag.CODEC_RAW)
    assert frame.flags == Flag.CODEC_RAW
    assert frame.payload == b"kv.Set\x00\xffraw"
    assert decode_request(frame) == RpcRequest(9, "kv.Set", b"\x00\xffraw", Flag.CODEC_RAW)
    reply = encode_reply(9, "kv.Set", b"", codec=Flag.CODEC_RAW)
    assert decode_reply(reply) == b""


def test_non_ascii_method_length_is_in_bytes() -> None:
    frame = encode_request(1, "svc.Méthode", [])
    assert frame.options == (1, len("svc.Méthode".encode()))
    assert decode_request(frame).method == "svc.Méthode"


@pytest.mark.parametrize("options", [(), (1,), (1, 3, 0)])
def test_decode_request_needs_two_options(options: tuple[int, ...]) -> None:
    with pytest.raises(FrameError, match="2 options"):
        decode_request(Frame(b"abc", Flag.CODEC_JSON, options))
    with pytest.raises(FrameError, match="2 options"):
        decode_reply(Frame(b"abc", Flag.CODEC_JSON, options))


def test_method_length_past_payload() -> None:
    with pytest.raises(FrameError, match="exceeds the payload"):
        decode_request(Frame(b"informer.List", Flag.CODEC_JSON, (1, 14)))
    with pytest.raises(FrameError, match="exceeds the payload"):
        decode_reply(Frame(b"x", Flag.CODEC_JSON | Flag.ERROR, (1, 2)))


@pytest.mark.parametrize("body", [b"{", b"tick", b"NaN", b"[Infinity]", b"\xff", b"[" * 50_000])
def test_non_json_body(body: bytes) -> None:
    with pytest.raises(FrameError, match="not JSON"):
        decode_request(Frame(b"a.B" + body, Flag.CODEC_JSON, (1, 3)))
    with pytest.raises(FrameError, match="not JSON"):
        decode_reply(Frame(b"a.B" + body, Flag.CODEC_JSON, (1, 3)))


def test_method_name_not_utf8() -> None:
    with pytest.raises(FrameError, match="not UTF-8"):
        decode_request(Frame(b"\xff\xfe{}", Flag.CODEC_JSON, (1, 2)))


@pytest.mark.parametrize(
    "flags",
    [
        Flag.NONE,
        Flag.CODEC_MSGPACK,
        Flag.CODEC_GOB,
        Flag.CODEC_PROTO,
        Flag.CODEC_PROTO | Flag.CODEC_JSON,
    ],
)
def test_unsupported_codec(flags: Flag) -> None:
    with pytest.raises(FrameError, match="unsupported rpc codec"):
        decode_request(Frame(b"a.B1", flags, (1, 3)))


def test_codec_precedence_follows_goridge() -> None:
    # JSON outranks RAW, as goridge's storeCodec has it.
    frame = Frame(b"a.B[1]", Flag.CODEC_JSON | Flag.CODEC_RAW | Flag.CODEC_GOB, (1, 3))
    assert decode_request(frame).body == [1]


@pytest.mark.parametrize("seq", [-1, 2**32, True, 1.0])
def test_seq_must_be_uint32(seq: object) -> None:
    with pytest.raises(ValueError, match="uint32"):
        encode_request(seq, "a.B", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("params", [float("nan"), {1j}, object()])
def test_params_must_be_json(params: object) -> None:
    with pytest.raises(ValueError, match="JSON"):
        encode_request(1, "a.B", params)


def test_raw_params_must_be_bytes() -> None:
    with pytest.raises(ValueError, match="bytes"):
        encode_request(1, "a.B", "text", codec=Flag.CODEC_RAW)


def test_unsupported_encode_codec() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        encode_reply(1, "a.B", 1, codec=Flag.CODEC_MSGPACK)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.integers(0, 2**32 - 1), st.text(max_size=40), json_values)
def test_round_trip(seq: int, method: str, value: object) -> None:
    (request,) = Decoder().feed(encode_request(seq, method, value).encode())
    decoded = decode_request(request)
    assert (decoded.seq, decoded.method, decoded.body) == (seq, method, value)
    (reply,) = Decoder().feed(encode_reply(seq, method, value).encode())
    assert decode_reply(reply, seq=seq) == value


@given(st.integers(0, 2**32 - 1), st.text(max_size=40), st.text(max_size=100))
def test_error_round_trip(seq: int, method: str, message: str) -> None:
    (frame,) = Decoder().feed(encode_error(seq, method, message).encode())
    with pytest.raises(RpcError) as caught:
        parse_reply(frame, seq=seq)
    assert (caught.value.seq, caught.value.method, caught.value.message) == (seq, method, message)
