"""Boots the first time (making the file in argv[1]); every later start fails before its
handshake, as a worker whose deploy broke underneath it."""

import os
import sys

marker = sys.argv[1]
if os.path.exists(marker):
    sys.exit(3)
open(marker, "w").close()

from rrd.sdk import Payload, Worker  # noqa: E402

worker = Worker.create()
for payload in worker:
    if payload.body == b"CRASH":
        os._exit(3)
    worker.respond(Payload(b"OK:" + payload.body))
