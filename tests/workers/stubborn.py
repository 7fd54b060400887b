"""Ignores the stop frame and SIGTERM: only SIGKILL ends it. Also leaves a child behind."""

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
    else:
        worker.respond(Payload(b"OK:" + payload.body))
