"""Appends one JSON line per payload to the file in $TICK_LOG: tick, lastTick, mode, arrival, pid.

`time.monotonic()` is CLOCK_MONOTONIC, the same clock in every process, so tests can compare
arrival times with their own. $HANG_ON_TICK=N makes it hang on tick N (after recording it);
$RECORD_ENV=A,B adds those variables to each line.
"""

import json
import os
import signal
import time

from rrd.sdk import Payload, Worker

hang_on = os.environ.get("HANG_ON_TICK")
recorded = [name for name in os.environ.get("RECORD_ENV", "").split(",") if name]

worker = Worker.create()
with open(os.environ["TICK_LOG"], "a", buffering=1) as log:
    for payload in worker:
        tick = json.loads(payload.body)["tick"]
        line = {
            "arrival": time.monotonic(),
            "body": payload.body.decode(),
            "context": payload.context.decode(),
            "mode": worker.mode,
            "pid": os.getpid(),
            "env": {name: os.environ.get(name) for name in recorded},
        }
        log.write(json.dumps(line) + "\n")
        if str(tick) == hang_on:
            signal.pause()  # hangs until rrd kills it
        worker.respond(Payload())
