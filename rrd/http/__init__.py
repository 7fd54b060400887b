"""The HTTP endpoints: status (/health, /ready) and metrics (/metrics), on the daemon's loop.

Room: http (the core tier, beside control). Off unless configured: nothing here is imported
then.
"""
