"""Ignores the stop frame and SIGTERM: only SIGKILL ends it. Also leaves a child behind.
A payload `HANG` is never answered."""

import signal
import subprocess
import sys

signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
sys.stderr.write(f"child {child.pid}\n")
sys.stderr.flush()

from rrd.sdk import Payload, Worker  # noqa: E402

worker = Worker.create()
while True:
    payload = worker.wait_payload()
    if payload is None:
        signal.pause()  # ignores the stop frame: only SIGKILL ends it
    elif payload.body == b"HANG":
        signal.pause()
    else:
        worker.respond(Payload(b"OK:" + payload.body))
