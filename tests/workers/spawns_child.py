"""Starts a child in its own process group (as most programs' children are) and serves;
says the child's pid on stderr."""

import subprocess
import sys

child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
sys.stderr.write(f"child {child.pid}\n")
sys.stderr.flush()

from rrd.sdk import Payload, Worker  # noqa: E402

worker = Worker.create()
for payload in worker:
    worker.respond(Payload(b"OK:" + payload.body))
