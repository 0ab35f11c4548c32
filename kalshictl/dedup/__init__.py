"""The deduplicator: merge every gatherer's tables into production exactly once (see docs/deduplicator.md)."""
