"""`python -m rrd` and the `rrd` command: catch the stop and reset signals first, then the CLI.

The rest of rrd (click, PyYAML, the config) takes about a tenth of a second to import and
load; a SIGHUP in that time would end the process, so the signals are held from the start.
"""

import sys

from rrd.plugins.entrypoints import skip_openssl
from rrd.signals import EarlySignals


def main() -> None:
    early = EarlySignals.catch()
    if sys.argv[1:2] == ["serve"]:
        skip_openssl()
    from rrd.cli import main as cli_main

    cli_main(early)


if __name__ == "__main__":
    main()
