"""Operation services called by the CLI (the CLI stays thin)."""
