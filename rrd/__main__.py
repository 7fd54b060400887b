"""`python -m rrd` runs the `rrd` command."""

from rrd.cli import main

main()
