"""Serves, but $CHATTY_AFTER seconds after it starts it writes a reply nobody asked for."""

import os
import threading
import time

from rrd.protocol.control import Payload, payload_frame
from rrd.sdk import Worker

worker = Worker.create()


def chatter() -> None:
    time.sleep(float(os.environ.get("CHATTY_AFTER", "0.5")))
    worker.relay.write_frame(payload_frame(Payload(b"unasked")))


threading.Thread(target=chatter, daemon=True).start()
for payload in worker:
    worker.respond(Payload(b"OK:" + payload.body))
