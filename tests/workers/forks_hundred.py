"""Forks $FORKS (100) children that stay in its process group and sleep, says their pids on
stderr in one line, then serves. The children hold nothing of the relay open."""

import os
import signal

from rrd.sdk import Payload, Worker

worker = Worker.create()
children = []
for _ in range(int(os.environ.get("FORKS", "100"))):
    pid = os.fork()
    if pid == 0:
        os.closerange(0, 1024)
        signal.pause()
        os._exit(0)
    children.append(pid)
os.write(2, ("children " + " ".join(map(str, children)) + "\n").encode())
for payload in worker:
    worker.respond(Payload(b"OK:" + payload.body))
