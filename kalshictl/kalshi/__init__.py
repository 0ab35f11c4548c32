"""The Kalshi exchange protocol: request signing, REST client and WebSocket message parsing."""
