"""Dies before its handshake, as a worker with a broken bootstrap does."""

import sys

sys.stderr.write("boot_crash: cannot load the application\n")
sys.exit(3)
