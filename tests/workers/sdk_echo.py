"""The conformance worker, in Python: what the PHP script behind basic/error.*.bin does.

Answers each payload with its own context and `OK:` + body; bodies name actions:
`ERR:<msg>` -> error(msg), `STOPME` -> retire(), `ECHO` -> a stray print then `echoed`,
`THROW` -> an uncaught exception. `FDECHO` (not in the PHP script) writes to fd 1 directly and
through a child process that also reads stdin, then answers `fd-echoed`.
"""

import os
import subprocess
import sys

from rrd.sdk import Payload, Worker

CHILD = (
    "import os, sys; data = sys.stdin.buffer.read(); "
    "os.write(1, b'child stdout, read %d bytes of stdin\\n' % len(data))"
)


def main() -> None:
    worker = Worker.create()
    for payload in worker:
        body = payload.body
        if body.startswith(b"ERR:"):
            worker.error(body[4:].decode())
        elif body == b"STOPME":
            worker.retire()
        elif body == b"ECHO":
            print("stray print from ECHO")
            sys.stdout.write("stray sys.stdout.write\n")
            worker.respond(Payload(b"echoed", payload.context))
        elif body == b"FDECHO":
            os.write(1, b"stray os.write to fd 1\n")
            subprocess.run([sys.executable, "-S", "-c", CHILD], check=True, timeout=10)
            worker.respond(Payload(b"fd-echoed", payload.context))
        elif body == b"THROW":
            raise RuntimeError("thrown by the worker")
        else:
            worker.respond(Payload(b"OK:" + body, payload.context))


if __name__ == "__main__":
    main()
