"""The first $FAIL_FIRST starts (counted with files in $FLAKY_DIR) exit 3 before their
handshake, saying so on stderr; every later start serves, as after a deploy that settles."""

import os
import sys

folder, failing = os.environ["FLAKY_DIR"], int(os.environ.get("FAIL_FIRST", "1"))
for n in range(failing):
    try:
        os.close(os.open(os.path.join(folder, f"failed-{n}"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        continue
    sys.stderr.write(f"flaky_boot: start {n} fails\n")
    sys.exit(3)

from rrd.sdk import Payload, Worker  # noqa: E402

worker = Worker.create()
for payload in worker:
    worker.respond(Payload(b"OK:" + payload.body))
