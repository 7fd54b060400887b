"""Prints text to stdout before the handshake, as a PHP script with a stray echo does."""

import sys

sys.stdout.write("Warning: something went wrong in bootstrap.php on line 3\n")
sys.stdout.flush()
sys.stdin.read()
