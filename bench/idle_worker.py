"""What supervisord runs in bench/recovery.py: a Python program that imports rrd.sdk, as a
worker does, then waits; it has no relay to speak on."""

import signal

import rrd.sdk  # noqa: F401  (the start-up cost every worker pays)

while True:
    signal.pause()
