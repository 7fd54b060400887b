"""Serves $CRASH_AFTER jobs, then exits 3 in the middle of the next one."""

import os

from rrd.sdk import Payload, Worker

left = int(os.environ.get("CRASH_AFTER", "1"))
worker = Worker.create()
for payload in worker:
    if left == 0:
        os._exit(3)
    left -= 1
    worker.respond(Payload(b"OK:" + payload.body))
