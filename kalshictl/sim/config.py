"""Settings of the local exchange."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

REST_PREFIX = "/trade-api/v2"
WS_PATH = "/trade-api/ws/v2"


@dataclass
class SimConfig:
    """Everything that shapes one run of the local exchange.

    ``rate`` is the overall number of exchange events (deltas, trades, ticker updates, lifecycle) per second.
    ``ground_truth``: path of the JSONL log (kept); ``None`` records into a temporary file that :meth:`stop` removes
    (``record_ground_truth=False``: no file at all).
    ``public_key``: PEM text/bytes or a path; when set, REST requests and the WS upgrade must be signed.

    Protocol readings where Kalshi's documentation is silent or ambiguous (docs/sim.md, "Kalshi fidelity"); the
    defaults follow the documentation and captures of the real exchange, and :data:`OPTIONS` can change at runtime:

    * ``ack_seq``: ``"own"`` an ``ok``/``unsubscribed`` ack consumes a seq of its sid (the next data frame has
      ack.seq + 1); ``"last"`` the ack carries the sid's last data seq and consumes none.
    * ``snapshot_seq``: ``"consume"`` a ``get_snapshot`` reply consumes a seq; ``"none"`` it carries the sid's
      current seq without advancing it.
    * ``repeat_subscribe``: ``"merge"`` a second ``subscribe`` of a channel joins the existing sid (``ok`` ack,
      snapshots only for new markets); ``"new_sid"`` every subscribe opens a fresh sid.
    * ``delta_ts_ms``: ``"always"`` every delta has ``ts_ms``/``ts``; ``"sometimes"`` some deltas carry neither.
    * ``mve_listing``: what ``GET /markets`` without ``mve_filter`` lists: ``"include"`` every market, ``"exclude"``
      no multivariate (``KXMVE…``) market (the docs name the filter but not its default).
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
    ack_seq: str = "own"
    snapshot_seq: str = "consume"
    repeat_subscribe: str = "merge"
    delta_ts_ms: str = "always"
    mve_listing: str = "include"
    untimed_delta_share: float = 0.1  # with delta_ts_ms="sometimes": share of deltas sent without ts_ms/ts
    mve_share: float = 0.1  # share of series that are multivariate (KXMVE...) collections
    metadata_share: float = 0.01  # share of actions that are metadata_updated / event_fee_update / repeated deactivated
    history_days: int = 0  # days of past markets and trades before the anchor (kalshictl/sim/history.py)
    history_markets_per_day: int = 12

    def __post_init__(self) -> None:
        for name in CHOICES:
            check_option(name, getattr(self, name))


# Options with a fixed set of values (also flags of ``kalshictl sim`` and ``POST /_sim/options``).
CHOICES: dict[str, tuple[str, ...]] = {
    "ack_seq": ("own", "last"),
    "snapshot_seq": ("consume", "none"),
    "repeat_subscribe": ("merge", "new_sid"),
    "delta_ts_ms": ("always", "sometimes"),
    "mve_listing": ("include", "exclude"),
}
# Options that may change while the exchange runs (``POST /_sim/options``).
OPTIONS: tuple[str, ...] = (*CHOICES, "max_markets_per_sub", "untimed_delta_share")


def check_option(name: str, value: Any) -> Any:
    """Validate one runtime option; returns the value (converted to its type); ValueError if bad."""
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ValueError(f"{name}: expected one of {'|'.join(CHOICES[name])}, got {value!r}")
        return value
    if name == "max_markets_per_sub":
        value = int(value)
        if value < 1:
            raise ValueError("max_markets_per_sub: must be >= 1")
        return value
    if name == "untimed_delta_share":
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError("untimed_delta_share: must be within [0, 1]")
        return value
    known = ", ".join(OPTIONS)
    raise ValueError(f"unknown option {name!r}; runtime options: {known}")
