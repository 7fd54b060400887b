"""RPC framing for the control socket, as goridge's net/rpc codec and PHP's RPC client speak it.

Room: protocol. Imports only `rrd.protocol.frame`, `rrd.errors` and the standard library.

A call and its reply are one frame each with two options, [sequence number, method-name
length]; the payload is the method name, then the body in the codec the flags name (JSON
from PHP clients, compact here). A reply echoes the sequence number, the method name and the
codec; with ERROR set, the text after the method name is the error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

from rrd.errors import FrameError, RrdError
from rrd.protocol.frame import Flag, Frame, preview

CODECS = Flag.CODEC_JSON | Flag.CODEC_RAW
"""The body codecs rrd speaks; goridge's MSGPACK, GOB and PROTO are refused."""

_UINT32_MAX = 0xFFFFFFFF
# goridge picks the codec by this precedence when a frame sets more than one bit.
_PRECEDENCE = (
    Flag.CODEC_PROTO,
    Flag.CODEC_JSON,
    Flag.CODEC_RAW,
    Flag.CODEC_MSGPACK,
    Flag.CODEC_GOB,
)


class RpcError(RrdError):
    """The remote side answered a call with an ERROR frame; the message is its text."""

    def __init__(self, message: str, *, seq: int | None = None, method: str = "") -> None:
        self.message = message
        self.seq = seq
        self.method = method
        super().__init__(message or f"rpc call {method or '?'} failed")


@dataclass(frozen=True, slots=True)
class RpcRequest:
    """A decoded call: sequence number, `Service.Method` name and the decoded body."""

    seq: int
    method: str
    body: Any
    codec: Flag = Flag.CODEC_JSON


@dataclass(frozen=True, slots=True)
class RpcReply:
    """A decoded, successful reply: the echoed sequence number and method, and the result."""

    seq: int
    method: str
    result: Any
    codec: Flag = Flag.CODEC_JSON


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _encode_body(value: Any, codec: Flag) -> bytes:
    if codec == Flag.CODEC_JSON:
        try:
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"rpc body is not JSON-serialisable: {exc}") from None
    if codec == Flag.CODEC_RAW:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise ValueError(f"a raw rpc body must be bytes, not {type(value).__name__}")
        return bytes(value)
    raise ValueError(f"unsupported rpc codec 0x{int(codec):02x}")


def _frame(seq: int, method: str, rest: bytes, flags: Flag) -> Frame:
    if type(seq) is not int or not 0 <= seq <= _UINT32_MAX:
        raise ValueError(f"rpc sequence number must be a uint32, not {seq!r}")
    name = method.encode()
    return Frame(name + rest, flags, (seq, len(name)))


def encode_request(seq: int, method: str, params: Any, *, codec: Flag = Flag.CODEC_JSON) -> Frame:
    """The frame calling `method` (`Service.Method`) with `params` in `codec`."""
    return _frame(seq, method, _encode_body(params, codec), codec)


def encode_reply(seq: int, method: str, result: Any, *, codec: Flag = Flag.CODEC_JSON) -> Frame:
    """The frame answering call `seq` of `method` with `result`, in the call's codec."""
    return _frame(seq, method, _encode_body(result, codec), codec)


def encode_error(seq: int, method: str, message: str, *, codec: Flag = Flag.CODEC_JSON) -> Frame:
    """The frame failing call `seq` of `method`: ERROR set, the message after the name."""
    # goridge ORs ERROR into the call's codec flags; clients look only at the ERROR bit.
    return _frame(seq, method, message.encode(), codec | Flag.ERROR)


def _split(frame: Frame) -> tuple[int, str, bytes]:
    if len(frame.options) != 2:
        raise FrameError(
            f"rpc frame needs 2 options (sequence, method length), got {len(frame.options)}"
        )
    seq, size = frame.options
    payload = frame.payload
    if size > len(payload):
        raise FrameError(f"rpc method length {size} exceeds the payload of {len(payload)} bytes")
    try:
        method = payload[:size].decode()
    except UnicodeDecodeError:
        raise FrameError(f"rpc method name is not UTF-8: {preview(payload[:size])}") from None
    return seq, method, payload[size:]


def _codec(flags: Flag) -> Flag:
    for codec in _PRECEDENCE:
        if flags & codec:
            if codec & CODECS:
                return codec
            break
    raise FrameError(f"unsupported rpc codec in flags 0x{int(flags):02x}")


def _decode_body(data: bytes, codec: Flag) -> Any:
    if codec == Flag.CODEC_RAW:
        return data
    if not data:
        # goridge leaves the argument untouched for an empty body; None is Python's nothing.
        return None
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise FrameError(f"rpc body is not JSON: {preview(data)}") from None


def decode_request(frame: Frame) -> RpcRequest:
    """The call a frame carries; FrameError for a malformed frame or an unsupported codec."""
    seq, method, rest = _split(frame)
    codec = _codec(frame.flags)
    return RpcRequest(seq, method, _decode_body(rest, codec), codec)


def parse_reply(frame: Frame, *, seq: int | None = None) -> RpcReply:
    """The reply a frame carries; RpcError for an ERROR reply, FrameError for a malformed one.

    With `seq`, a reply to any other call is a FrameError too, even an ERROR reply.
    """
    got, method, rest = _split(frame)
    if seq is not None and got != seq:
        raise FrameError(f"rpc reply for call {got} of {method!r}, expected call {seq}")
    if frame.flags & Flag.ERROR:
        raise RpcError(rest.decode("utf-8", "replace"), seq=got, method=method)
    codec = _codec(frame.flags)
    return RpcReply(got, method, _decode_body(rest, codec), codec)


def decode_reply(frame: Frame, *, seq: int | None = None) -> Any:
    """The result of a reply; RpcError for an ERROR reply (see `parse_reply`)."""
    return parse_reply(frame, seq=seq).result
