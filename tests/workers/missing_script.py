"""Says what `php missing.php` says on stdout, then exits 1. With $PIECES, the text comes in
three writes 30 ms apart, as a pipe may deliver it."""

import os
import sys
import time

text = b"Could not open input file: php/does-not-exist.php\n"
if os.environ.get("PIECES"):
    for piece in (text[:7], text[7:30], text[30:]):
        os.write(1, piece)
        time.sleep(0.03)
else:
    os.write(1, text)
sys.exit(1)
