"""A complete local pipeline (embedded PostgreSQL, local exchange, gatherers, deduplicator) for demo, tests, chaos."""
