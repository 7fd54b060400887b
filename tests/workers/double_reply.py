"""Answers every payload twice, as a worker with a bug in its loop: the echo, then again.

$DOUBLE_DELAY seconds between the two replies (0: back to back, as two writes).
"""

import os
import time

from rrd.sdk import Payload, Worker

delay = float(os.environ.get("DOUBLE_DELAY", "0"))
worker = Worker.create()
for payload in worker:
    worker.respond(Payload(b"OK:" + payload.body))
    if delay:
        time.sleep(delay)
    worker.respond(Payload(b"AGAIN:" + payload.body))
