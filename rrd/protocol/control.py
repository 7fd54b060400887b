"""Control messages and payload frames, as RoadRunner and spiral/roadrunner-worker exchange them.

Room: protocol. Imports only `rrd.protocol.frame`, `rrd.errors` and the standard library.
JSON here is compact (`{"pid":123}`): the PHP library expects exactly that.
"""

from __future__ import annotations

from rrd.errors import FrameError
from rrd.protocol.frame import Flag, Frame, Record, preview

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every worker ~4 ms of its start: for the checker only
    from typing import Any, Final

# json is imported where it is used: with the `re` it loads, it is ~5 ms of a worker's start,
# and a worker's handshake needs no JSON parser (see `_known_control`).

CONTROL_JSON = Flag.CONTROL | Flag.CODEC_JSON
STOP_JSON = b'{"stop":true}'
_PID_PREFIX = b'{"pid":'
PID_MAX = 2**31 - 1
"""The largest pid_t: a larger number in a pid frame is garbage, not a process."""


class Payload(Record):
    """What a worker is given and answers: body bytes plus context bytes (headers, metadata).

    A Record rather than a dataclass: the SDK imports this module, and dataclasses (with
    inspect) would add ~9 ms to every worker's start, which is most of a crash's recovery."""

    __slots__ = ("body", "context")

    def __init__(self, body: bytes = b"", context: bytes = b"") -> None:
        self.body: Final = body
        self.context: Final = context

    def json(self) -> Any:
        """The body decoded as JSON."""
        import json

        return json.loads(self.body)

    def context_json(self) -> Any:
        """The context decoded as JSON; an empty context is None."""
        import json

        return json.loads(self.context) if self.context else None


def pid_request(server_pid: int) -> Frame:
    """The server's opening frame. The pid must be positive: the PHP library dies on 0."""
    if type(server_pid) is not int or server_pid <= 0:
        raise ValueError(f"server pid must be a positive int, not {server_pid!r}")
    return Frame(b'{"pid":%d}' % server_pid, CONTROL_JSON)


def pid_reply(worker_pid: int) -> Frame:
    """A worker's answer to the pid request (flags CONTROL, as the PHP library sends)."""
    return Frame(b'{"pid":%d}' % worker_pid, Flag.CONTROL)


def stop_request() -> Frame:
    """The server asks a worker to leave its loop and exit 0."""
    return Frame(STOP_JSON, CONTROL_JSON)


def parse_control(frame: Frame) -> dict[str, Any]:
    """The JSON object a CONTROL frame carries; FrameError for anything else."""
    if not frame.flags & Flag.CONTROL:
        raise FrameError(f"expected a control frame, got flags 0x{int(frame.flags):02x}")
    message = _known_control(frame.payload)
    if message is None:
        import json

        try:
            message = json.loads(frame.payload)
        except (ValueError, RecursionError):  # deep nesting is garbage too, not a crash of rrd
            message = None
    if not isinstance(message, dict):
        raise FrameError(f"control frame is not a JSON object: {preview(frame.payload)}")
    return message


def _known_control(payload: bytes) -> dict[str, Any] | None:
    """The two messages servers and workers send, in the compact form they send them
    (`{"pid":N}`, `{"stop":true}`), read without a JSON parser; None for anything else."""
    if payload == STOP_JSON:
        return {"stop": True}
    digits = payload[len(_PID_PREFIX) : -1]
    if (
        payload.startswith(_PID_PREFIX)
        and payload.endswith(b"}")
        and digits.isdigit()  # ASCII digits only, for bytes
        and len(digits) <= 10  # int() refuses more than 4300 digits; no pid has 11
        and not digits.startswith(b"0")  # JSON has no leading zeros; 0 is no pid anyway
    ):
        return {"pid": int(digits)}
    return None


def parse_pid(frame: Frame) -> int:
    """The positive pid in a `{"pid":N}` control frame; FrameError for anything else."""
    pid = parse_control(frame).get("pid")
    if type(pid) is not int or pid <= 0:
        raise FrameError(f"control frame has no positive pid: {preview(frame.payload)}")
    if pid > PID_MAX:
        raise FrameError(f"control frame has a pid past {PID_MAX}: {preview(frame.payload)}")
    return pid


def is_stop_request(frame: Frame) -> bool:
    """True for the server's `{"stop":true}` control frame."""
    if not frame.flags & Flag.CONTROL:
        return False
    try:
        return parse_control(frame).get("stop") is True
    except FrameError:
        return False


def payload_frame(payload: Payload, flags: Flag = Flag.NONE) -> Frame:
    """An exec request or reply: one option, the context length; context then body."""
    return Frame(payload.context + payload.body, flags, (len(payload.context),))


def split_payload(frame: Frame) -> Payload:
    """Context and body of a data frame; FrameError unless it has exactly one sane option."""
    if len(frame.options) != 1:
        raise FrameError(f"payload frame needs exactly 1 option, got {len(frame.options)}")
    context_size = frame.options[0]
    if context_size > len(frame.payload):
        raise FrameError(
            f"context length {context_size} exceeds the payload of {len(frame.payload)} bytes"
        )
    data = frame.payload
    return Payload(body=data[context_size:], context=data[:context_size])


def retire_reply() -> Frame:
    """A worker's reply asking to be retired: context exactly `{"stop":true}`, empty body."""
    return payload_frame(Payload(context=STOP_JSON))


def is_retire_reply(payload: Payload) -> bool:
    """True when a reply is the worker's request to be retired instead of an answer."""
    return payload.context == STOP_JSON and not payload.body
