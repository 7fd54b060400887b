#!/usr/bin/env python3
"""The worker of the systemd stage (tests/systemd/run.sh), on rrd.sdk: it logs every tick.

RRD_TEST_BOOT_DELAY=SECONDS makes it that slow to start (so that replacing the workers takes
long enough to tell whether `systemctl reload` waited for it). With RRD_TEST_GRANDCHILD=1 it
first double-forks a grandchild that leaves its session (as an
init script or a badly behaved extension does) and sleeps until killed: it is no longer in
the worker's process group, and rrd, a child subreaper, adopts it. The stage checks that no
such process outlives a `kill -9` of rrd.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from rrd.sdk import Kernel, Payload, TickerDispatcher


def leave_grandchild() -> None:
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            print(f"grandchild {os.getpid()}", file=sys.stderr, flush=True)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # let go of the worker's relay and stderr pipes
                os.dup2(devnull, fd)
            while True:
                signal.pause()
        os._exit(0)
    os.wait()


class Ticks(TickerDispatcher):
    def handle_tick(self, tick: int, last_tick: int, payload: Payload) -> None:
        print(f"tick {tick} lastTick {last_tick} pid {os.getpid()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    time.sleep(float(os.environ.get("RRD_TEST_BOOT_DELAY", "0")))
    if os.environ.get("RRD_TEST_GRANDCHILD") == "1":
        leave_grandchild()
    Kernel().add_dispatcher(Ticks()).run()
