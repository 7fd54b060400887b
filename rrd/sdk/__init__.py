"""The Python worker library, rrd's counterpart of spiral/roadrunner-worker.

Room: sdk. Imports only `rrd.protocol`, `rrd.errors` and the standard library, so that a
worker starts fast.

    from rrd.sdk import Payload, Worker

    worker = Worker.create()
    for payload in worker:
        worker.respond(Payload(b"OK:" + payload.body, payload.context))
"""

from rrd.protocol.control import Payload
from rrd.sdk.kernel import Dispatcher, Kernel, TickerDispatcher, parse_tick
from rrd.sdk.relay import PipeRelay, Relay, SocketRelay
from rrd.sdk.worker import Worker

__all__ = [
    "Dispatcher",
    "Kernel",
    "Payload",
    "PipeRelay",
    "Relay",
    "SocketRelay",
    "TickerDispatcher",
    "Worker",
    "parse_tick",
]
