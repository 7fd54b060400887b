"""Answers every payload with what Worker.create() read: `{"mode": ..., "rpc": ...}`."""

import json

from rrd.sdk import Payload, Worker

if __name__ == "__main__":
    worker = Worker.create()
    seen = {"mode": worker.mode, "rpc": worker.rpc_address}
    for _ in worker:
        worker.respond(Payload(json.dumps(seen).encode()))
