"""Shakes hands properly, then answers a payload with bytes that are not a frame."""

import os

from rrd.protocol.control import parse_pid, pid_reply
from rrd.protocol.frame import Decoder

decoder = Decoder()
handshaken = False
while chunk := os.read(0, 65536):
    for frame in decoder.feed(chunk):
        if not handshaken:
            parse_pid(frame)
            os.write(1, pid_reply(os.getpid()).encode())
            handshaken = True
        else:
            os.write(1, b"Fatal error: this is not a frame at all\n")
