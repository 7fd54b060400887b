"""Room: plugins. Features fed by config; each asks the server for a pool and feeds it."""
