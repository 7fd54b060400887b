"""Answers a payload with a valid frame header that announces a 4 GiB payload, then waits."""

import signal
import struct
import zlib

from rrd.sdk import Worker

worker = Worker.create()
for _payload in worker:
    prefix = struct.pack("<BBI", (1 << 4) | 4, 0, 0xFFFFFFF0)
    header = prefix + struct.pack("<IBB", zlib.crc32(prefix), 0, 0) + struct.pack("<I", 0)
    worker.relay._send(header)
    signal.pause()
