"""Shakes hands, then closes its stdout (the relay's copy too), says so on stderr and lives on
without reading or writing anything more."""

import os
import signal

from rrd.protocol.control import pid_reply
from rrd.sdk import Worker

worker = Worker.create(intercept_stdout=False)
worker.relay.read_frame()  # the pid request
worker.relay.write_frame(pid_reply(os.getpid()))
os.close(worker.relay.write_fd)
os.close(1)
os.write(2, b"closed stdout\n")
while True:
    signal.pause()
