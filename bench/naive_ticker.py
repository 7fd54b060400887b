"""The naive ticker bench/ticker.py sets rrd's against: `while True: sleep(interval); exec`.

    .venv/bin/python bench/naive_ticker.py --interval 0.01 -- CMD [ARG ...]

One worker (CMD), started the way rrd starts one (rrd.worker.WorkerProcess: the same pipes,
frames and relay code), then a loop that awaits `asyncio.sleep(interval)` and sends the worker
one payload, awaiting its reply, with the body and context rrd's ticker sends
(`{"tick": n}`, `{"lastTick": ..., "k": k}`, k the loop count from 1). No schedule, no alarm
thread: each late wake-up and each exec pushes every later tick back. Runs until SIGTERM or
SIGINT, then stops its worker with a stop frame and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time

from rrd.fsm import ExitReason
from rrd.proc import ProcessRegistry, parent_death_launcher
from rrd.protocol.control import Payload
from rrd.worker import WorkerProcess, WorkerSpec, install_child_watcher


async def tick_forever(worker: WorkerProcess, interval: float) -> None:
    k, last_tick = 0, 0
    while True:
        await asyncio.sleep(interval)
        k += 1
        payload = Payload(
            body=json.dumps({"tick": k - 1}).encode(),
            context=json.dumps({"lastTick": last_tick, "k": k}).encode(),
        )
        last_tick = int(time.time())
        worker.reserve()
        await worker.exec(payload, timeout=5)
        worker.release()


async def main(interval: float, command: list[str]) -> None:
    env = {**os.environ, "RR_RELAY": "pipes", "RR_MODE": "ticker"}
    spec = WorkerSpec(argv=tuple(command), env=env, plugin="naive", cwd=os.getcwd())
    registry = ProcessRegistry(launcher=parent_death_launcher())
    worker = await WorkerProcess.start(spec, registry)
    loop = asyncio.get_running_loop()
    ticking = asyncio.create_task(tick_forever(worker, interval))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, ticking.cancel)
    try:
        await ticking
    except asyncio.CancelledError:
        pass
    finally:
        worker.release()
        await worker.stop(ExitReason.DESTROY, grace=5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--interval", type=float, required=True, help="seconds")
    parser.add_argument("command", nargs="+", help="the worker's argv, after --")
    args = parser.parse_args()
    install_child_watcher()  # before the loop, as `rrd serve` does
    asyncio.run(main(args.interval, args.command))
