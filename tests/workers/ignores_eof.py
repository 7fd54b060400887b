"""Shakes hands, then never reads stdin again and ignores SIGTERM: EOF means nothing to it,
it answers no health check, and only SIGKILL (or the kernel's parent-death signal) ends it."""

import os
import signal

from rrd.protocol.control import pid_reply
from rrd.sdk import Worker

signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = Worker.create()
worker.relay.read_frame()  # the pid request
worker.relay.write_frame(pid_reply(os.getpid()))
os.write(2, b"ignoring stdin from now on\n")
while True:
    signal.pause()
