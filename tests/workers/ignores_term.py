"""Ignores SIGTERM and, under rrd, the stop frame too: only SIGKILL ends it. Leaves no child.

Under rrd (RR_RELAY set) it answers every payload `OK:<body>` until the stop frame, then waits
for its SIGKILL. Under another supervisor (no relay: supervisord, circus) it only waits, so
that every supervisor has to run out its grace period and kill it.
"""

import os
import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)

from rrd.sdk import Payload, Worker  # noqa: E402

if os.environ.get("RR_RELAY"):
    worker = Worker.create()
    for payload in worker:
        worker.respond(Payload(b"OK:" + payload.body, payload.context))
while True:
    signal.pause()
