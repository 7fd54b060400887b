"""Room: control (the daemon tier). The control socket: goridge RPC with the JSON codec and
RoadRunner's method names, so that `rrd status|reload|reset|scale|stop|workers` and PHP's own
RPC client can talk to a running rrd.

`address` says where the socket is (the daemon and the CLI agree on it), `server` serves it on
the daemon's loop, `client` calls it from a command line. Imports protocol, config and errors.
"""
