"""Import Kalshi's history (markets, trades, candlesticks) into production: docs/research.md, "History"."""
