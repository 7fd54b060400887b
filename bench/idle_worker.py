"""What supervisord and circus run in the benches (bench/peers.py): a Python program that
imports rrd.sdk, as a worker does, then waits; the peers have no relay to speak on. SIGTERM
ends it (the default action), as a stop of either peer expects."""

import signal

import rrd.sdk  # noqa: F401  (the start-up cost every worker pays)

while True:
    signal.pause()
