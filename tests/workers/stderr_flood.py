"""Serves, and floods stderr from a thread: `lines` mode writes short lines as fast as it
can, `nonewline` one endless line; $FLOOD picks the mode."""

import os
import threading

from rrd.sdk import Payload, Worker

mode = os.environ.get("FLOOD", "lines")
chunk = b"flood " * 2000 + (b"\n" if mode == "lines" else b"")


def flood() -> None:
    while True:
        os.write(2, chunk if mode != "lines" else b"flooding stderr, line after line\n" * 200)


worker = Worker.create()
threading.Thread(target=flood, daemon=True).start()
for payload in worker:
    worker.respond(Payload(b"OK:" + payload.body))
