"""Settings of the local exchange."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REST_PREFIX = "/trade-api/v2"
WS_PATH = "/trade-api/ws/v2"


@dataclass
class SimConfig:
    """Everything that shapes one run of the local exchange.

    ``rate`` is the overall number of exchange events (deltas, trades, ticker updates, lifecycle) per second.
    ``ground_truth``: path of the JSONL log; ``None`` picks a fresh temporary file (see ``record_ground_truth``).
    ``public_key``: PEM text/bytes or a path; when set, REST requests and the WS upgrade must be signed.
    """

    markets: int = 100
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    rate: float = 100.0
    faults: str = ""
    ground_truth: str | Path | None = None
    record_ground_truth: bool = True
    public_key: str | bytes | Path | None = None
    rest_tier: str = "unlimited"
    heartbeat_s: float = 10.0
    max_markets_per_sub: int = 10_000
    paused: bool = False
    anchor_ts: int | None = None  # Unix seconds that market dates are laid out around; default: today 00:00 UTC
    trade_share: float = 0.15  # share of activity actions that are trades
    lifecycle_share: float = 0.01  # share of activity actions that are lifecycle transitions
    create_share: float = 0.004  # share of activity actions that create a new event with new markets
    duplicate_delta_share: float = 0.015  # share of deltas repeated identically in the same millisecond
    activation_delay_s: float = 0.5  # created -> activated after about this long (counted in actions: rate * delay)
    trade_history: int = 200_000  # trades kept for GET /markets/trades
    ws_buffer_bytes: int = 256 * 1024 * 1024  # per-connection send buffer; overflow -> error 25 and disconnect
    auth_max_skew_s: float = 60.0  # accepted |now - KALSHI-ACCESS-TIMESTAMP|
    gt_flush_s: float = 0.5  # periodic ground-truth flush interval
