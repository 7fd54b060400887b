#!/usr/bin/env python3
"""A ticker worker built on rrd.sdk: it logs every tick to stderr.

rrd runs it as the ticker plugin's worker, with RR_MODE=ticker and the relay on its stdin and
stdout:

    server:
      command: "python3 examples/ticker_app.py"

Run by hand it has no RR_MODE, so the kernel exits 1 saying so.
"""

from __future__ import annotations

import os
import sys

try:
    import rrd.sdk  # noqa: F401
except ImportError:
    # Run from a checkout where rrd is not installed: the package sits next to examples/.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rrd.sdk import Kernel, Payload, TickerDispatcher


class LogTicker(TickerDispatcher):
    """Logs each tick: its number, the previous tick's time, and this worker's pid."""

    def handle_tick(self, tick: int, last_tick: int, payload: Payload) -> None:
        print(f"tick {tick} lastTick {last_tick} pid {os.getpid()}", file=sys.stderr, flush=True)


def main() -> None:
    Kernel().add_dispatcher(LogTicker()).run()


if __name__ == "__main__":
    main()
