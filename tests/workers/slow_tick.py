"""Takes $TICK_SECONDS on every tick, saying on stderr when it starts and ends one."""

import os
import sys
import time

from rrd.sdk import Payload, Worker

seconds = float(os.environ.get("TICK_SECONDS", "1"))
worker = Worker.create()
for payload in worker:
    sys.stderr.write(f"tick begins {payload.body.decode()}\n")
    sys.stderr.flush()
    time.sleep(seconds)
    sys.stderr.write("tick ends\n")
    sys.stderr.flush()
    worker.respond(Payload())
