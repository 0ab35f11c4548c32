"""The whole pipeline on this machine — embedded PostgreSQL, the local exchange, gatherers and deduplicator as real
processes — for the demo, the end-to-end tests and the fault suite, with verification against the exchange's truth."""
