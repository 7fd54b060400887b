"""Says what `php missing.php` says on stdout, then exits 1."""

import sys

sys.stdout.write("Could not open input file: php/does-not-exist.php\n")
sys.exit(1)
