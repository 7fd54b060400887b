"""A worker having a bad day at random, for the soak: on each payload it crashes, hangs (until
rrd kills it), answers garbage on stdout, fails softly, asks to be retired, leaks memory, starts
a child that outlives nothing, or answers.

Seeded by $CHAOS_SEED plus its pid, so a run can be replayed. While the file named by
$CHAOS_CALM exists it only answers (the soak's warm-up and settling). $CHAOS_RATES overrides
the odds, e.g. `crash=0.01,hang=0`.
"""

import os
import random
import subprocess
import sys
import time

from rrd.sdk import Payload, Worker

RATES = {
    "crash": 0.001,
    "hang": 0.0005,
    "garbage": 0.001,
    "soft_error": 0.01,
    "retire": 0.001,
    "leak": 0.02,
    "child": 0.001,
}
LEAK = 8 << 20  # bytes per leak: the pool's max_worker_memory retires a leaker in seconds
MAX_CHILDREN = 3

for item in filter(None, os.environ.get("CHAOS_RATES", "").split(",")):
    name, _, rate = item.partition("=")
    RATES[name] = float(rate)
calm = os.environ.get("CHAOS_CALM", "")
chance = random.Random(int(os.environ.get("CHAOS_SEED", "0")) + os.getpid())
leaked: list[bytearray] = []
children: list[subprocess.Popen[bytes]] = []


def misbehaviour() -> str:
    if calm and os.path.exists(calm):
        return "answer"
    roll = chance.random()
    for name, rate in RATES.items():
        if roll < rate:
            return name
        roll -= rate
    return "answer"


worker = Worker.create()
for payload in worker:
    action = misbehaviour()
    if action == "crash":
        os._exit(chance.choice((1, 3, 70)))
    elif action == "hang":
        time.sleep(3600)
    elif action == "garbage":
        worker.relay._send(b"PHP Warning: this is not a frame\n")
    elif action == "soft_error":
        worker.error("chaos: a soft error")
    elif action == "retire":
        worker.retire()
    else:
        if action == "leak":
            block = bytearray(LEAK)
            block[::4096] = b"x" * len(block[::4096])
            leaked.append(block)
        elif action == "child" and len(children) < MAX_CHILDREN:
            children.append(
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
            )
        worker.respond(Payload(b"OK:" + payload.body))
