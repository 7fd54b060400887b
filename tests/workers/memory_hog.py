"""Serves; a payload `GROW:<MiB>` makes a child process of it hold that much memory, so that
only the whole process tree's memory shows it."""

import subprocess
import sys

from rrd.sdk import Payload, Worker

HOLD = (
    "import sys, signal; data = bytearray(int(sys.argv[1]) << 20); data[::4096] = b'x' * "
    "len(data[::4096]); print(1, flush=True); signal.pause()"
)
children = []
worker = Worker.create()
for payload in worker:
    command, _, size = payload.body.decode().partition(":")
    if command == "GROW":
        child = subprocess.Popen([sys.executable, "-c", HOLD, size], stdout=subprocess.PIPE)
        assert child.stdout is not None
        child.stdout.readline()  # the memory is held
        children.append(child)
    worker.respond(Payload(b"OK:" + payload.body))
