"""Appends one JSON line per payload to the file in $TICK_LOG: tick, lastTick, mode, arrival, pid.

`time.monotonic()` is CLOCK_MONOTONIC, the same clock in every process, so tests can compare
arrival times with their own.
"""

import json
import os
import time

from rrd.sdk import Payload, Worker

worker = Worker.create()
with open(os.environ["TICK_LOG"], "a", buffering=1) as log:
    for payload in worker:
        log.write(
            json.dumps(
                {
                    "arrival": time.monotonic(),
                    "body": payload.body.decode(),
                    "context": payload.context.decode(),
                    "mode": worker.mode,
                    "pid": os.getpid(),
                }
            )
            + "\n"
        )
        worker.respond(Payload())
