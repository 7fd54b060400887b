"""rrd: a RoadRunner-style application server, run as a systemd-style supervisor daemon."""

__version__ = "0.1.0"
