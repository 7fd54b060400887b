"""A well-behaved worker whose replies are steered by the body, for pool tests.

`OK:<body>` echoes; `ERR:<msg>` soft error; `STOPME` asks to be retired; `STOPONCE:<file>`
asks to be retired unless the file exists, and creates it (so the rerun elsewhere succeeds);
`SLEEP:<s>` replies after s seconds; `CRASH` exits 3 mid-exec; `PID` answers its pid;
`ENV:<NAME>` answers the variable; `LOG:<text>` writes text to stderr, and prints it
(which must land on stderr too).
"""

import os
import sys
import time

from rrd.sdk import Payload, Worker

worker = Worker.create()
for payload in worker:
    body = payload.body.decode()
    command, _, argument = body.partition(":")
    if command == "ERR":
        worker.error(argument)
    elif command == "STOPME":
        worker.retire()
    elif command == "STOPONCE":
        if os.path.exists(argument):
            worker.respond(Payload(f"served by {os.getpid()}".encode()))
        else:
            open(argument, "w").close()
            worker.retire()
    elif command == "SLEEP":
        time.sleep(float(argument))
        worker.respond(Payload(b"slept", payload.context))
    elif command == "CRASH":
        os._exit(3)
    elif command == "PID":
        worker.respond(Payload(str(os.getpid()).encode()))
    elif command == "ENV":
        worker.respond(Payload(os.environ.get(argument, "<unset>").encode()))
    elif command == "LOG":
        sys.stderr.write(f"stderr says {argument}\n")
        sys.stderr.flush()
        print(f"print says {argument}", flush=True)
        worker.respond(Payload(b"logged"))
    else:
        worker.respond(Payload(b"OK:" + payload.body, payload.context))
