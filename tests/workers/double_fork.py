"""Double-forks a daemon that leaves the worker's session (setsid), as init scripts do, then
serves. The daemon says its pid on stderr and lives until killed."""

import os
import signal
import sys

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        sys.stderr.write(f"daemon {os.getpid()}\n")
        sys.stderr.flush()
        signal.pause()
        os._exit(0)
    os._exit(0)
os.wait()

from rrd.sdk import Payload, Worker  # noqa: E402

worker = Worker.create()
for payload in worker:
    worker.respond(Payload(b"OK:" + payload.body))
