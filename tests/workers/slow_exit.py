"""Serves, and after the stop frame takes $CLEANUP seconds to clean up before it exits 0."""

import os
import sys
import time

from rrd.sdk import Payload, Worker

worker = Worker.create()
for payload in worker:
    worker.respond(Payload(b"OK:" + payload.body))
sys.stderr.write("cleaning up\n")
sys.stderr.flush()
time.sleep(float(os.environ.get("CLEANUP", "1")))
sys.stderr.write("clean\n")
