"""A kernel with a ticker dispatcher that fails on tick 3 and a finalizer that logs each run."""

import sys

from rrd.sdk import Kernel, Payload, TickerDispatcher


class Ticker(TickerDispatcher):
    def handle_tick(self, tick: int, last_tick: int, payload: Payload) -> None:
        if tick == 3:
            raise ValueError("tick 3 is unlucky")
        print(f"handled tick={tick} lastTick={last_tick}", file=sys.stderr)


def finalizer() -> None:
    print("finalized", file=sys.stderr)


if __name__ == "__main__":
    Kernel().add_dispatcher(Ticker()).add_finalizer(finalizer).run()
