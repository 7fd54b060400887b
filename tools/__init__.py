"""Scripts for developing rrd (`make man`); not part of the installed package."""
