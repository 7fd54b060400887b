"""Takes `argv[1]` seconds before it is ready to shake hands."""

import sys
import time

time.sleep(float(sys.argv[1]))

from rrd.sdk import Payload, Worker  # noqa: E402

worker = Worker.create()
for payload in worker:
    worker.respond(Payload(b"OK:" + payload.body))
