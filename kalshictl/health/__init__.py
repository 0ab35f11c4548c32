"""Health: seed thresholds as pure functions, and the /health + /metrics HTTP server."""
