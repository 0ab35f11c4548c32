"""The gatherer: registry, connections, sequence tracking, parser routing, batch writers, the service."""
