"""kalshictl: record every Kalshi market event redundantly, deduplicate it into production, export it."""

__version__ = "0.1.0"
