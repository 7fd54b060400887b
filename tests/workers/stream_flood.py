"""Answers a payload `FRAMES:<size>:<count>` with `count` streamed frames of `size` bytes."""

from rrd.protocol.control import Payload, payload_frame
from rrd.protocol.frame import Frame, Stream
from rrd.sdk import Worker

worker = Worker.create()
for payload in worker:
    _, size, count = payload.body.decode().split(":")
    chunk = payload_frame(Payload(b"x" * int(size)))
    for _ in range(int(count) - 1):
        worker.relay.write_frame(Frame(chunk.payload, chunk.flags, chunk.options, Stream.STREAM))
    worker.relay.write_frame(chunk)
