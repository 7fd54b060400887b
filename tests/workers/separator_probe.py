"""Answers each payload with `with` if the server's separator (a pid request) came with the
payload, before the reply was written, else `without`. Speaks the protocol by hand, reading
one frame at a time as PHP's library does, so it sees what is in the pipe."""

import os
import select

from rrd.protocol.control import Payload, is_stop_request, payload_frame, pid_reply
from rrd.protocol.frame import Decoder, Flag

decoder = Decoder()
frames = []


def next_frame():
    while not frames:
        data = os.read(0, 65536)
        if not data:
            raise SystemExit(0)
        frames.extend(decoder.feed(data))
    return frames.pop(0)


while True:
    frame = next_frame()
    if frame.flags & Flag.CONTROL:
        if is_stop_request(frame):
            raise SystemExit(0)
        os.write(1, pid_reply(os.getpid()).encode())
        continue
    waiting = bool(frames) or bool(select.select([0], [], [], 1.0)[0])
    os.write(1, payload_frame(Payload(b"with" if waiting else b"without")).encode())
