"""Starts a grandchild in a session of its own (so it escapes the process group) that keeps
this worker's stderr open, then serves normally."""

import subprocess
import sys

child = subprocess.Popen(
    [sys.executable, "-c", "import signal; signal.pause()"], start_new_session=True
)
sys.stderr.write(f"escaped {child.pid}\n")
sys.stderr.flush()

from rrd.sdk import Payload, Worker  # noqa: E402

worker = Worker.create()
for payload in worker:
    worker.respond(Payload(b"OK:" + payload.body))
