"""Room: protocol. The goridge v3 wire format; imports only `rrd.errors` and the stdlib."""
