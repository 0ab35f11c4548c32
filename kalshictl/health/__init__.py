"""Health: the thresholds as pure functions, and the /health + /metrics HTTP server."""
