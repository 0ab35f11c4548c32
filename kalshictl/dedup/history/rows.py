"""Kalshi's historical objects as production rows in exact integer units (kalshictl/units.py), or :class:`BadRow`."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from kalshictl.dedup.market_sync import BadRow
from kalshictl.schema import CANDLESTICKS, TRADES
from kalshictl.units import PRICE_MAX, UnitError, parse_price, parse_size

MAX_TICKER = 128  # varchar(128) in production

TradeHistoryRow = tuple[str, int, int, str, int, int, bool, bool, str, str]
"""A production ``trades`` row from history, in TRADE_COLUMNS order (source ``historical``, gatherer ``_history``)."""
CandleRow = tuple[int | str | None, ...]
"""A ``candlesticks`` row, in CANDLE_COLUMNS order (ticker, period, end_ts, prices and sizes, source, received_at)."""


def _us(value: Any, field: str) -> int:
    if not isinstance(value, str):
        raise BadRow(f"{field}: expected an RFC3339 time")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRow(f"{field}: not an RFC3339 time: {value[:40]!r}") from None
    if dt.tzinfo is None:
        raise BadRow(f"{field}: time without a zone: {value[:40]!r}")
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def _ticker(item: dict[str, Any], field: str) -> str:
    value = item.get(field)
    if not isinstance(value, str) or not value or len(value) > MAX_TICKER or not value.isprintable():
        raise BadRow(f"{field}: missing, longer than {MAX_TICKER} or not printable")
    return value


@lru_cache(maxsize=1 << 16)
def _cached_price(value: str) -> int:
    return parse_price(value)


@lru_cache(maxsize=1 << 16)
def _cached_size(value: str) -> int:
    return parse_size(value)


def _price(value: Any, field: str) -> int:
    """A dollar string as an exact integer (a candle repeats a few thousand distinct strings: cached, bounded)."""
    try:
        return _cached_price(value) if isinstance(value, str) else parse_price(value)
    except (UnitError, TypeError, ValueError) as exc:
        raise BadRow(f"{field}: {exc}") from None


def _size(value: Any, field: str) -> int:
    try:
        return _cached_size(value) if isinstance(value, str) else parse_size(value)
    except (UnitError, TypeError, ValueError) as exc:
        raise BadRow(f"{field}: {exc}") from None


def trade_row(t: Any, received_at: int) -> TradeHistoryRow:
    """A ``Trade`` as a production trades row (``source = 'historical'``, gatherer ``_history``)."""
    if not isinstance(t, dict):
        raise BadRow(f"not an object ({type(t).__name__})")
    trade_id = t.get("trade_id")
    if not isinstance(trade_id, str) or len(trade_id) != 36:
        raise BadRow("trade_id: missing or not a UUID")
    if t.get("yes_price_dollars") is not None:
        price = _price(t["yes_price_dollars"], "yes_price_dollars")
    elif t.get("no_price_dollars") is not None:
        price = PRICE_MAX - _price(t["no_price_dollars"], "no_price_dollars")
    else:
        raise BadRow("yes_price_dollars/no_price_dollars: missing")
    taker = t.get("taker_outcome_side") or t.get("taker_side")
    if taker not in ("yes", "no"):
        raise BadRow(f"taker_outcome_side: expected yes/no, got {str(taker)[:10]!r}")
    return (
        trade_id,
        _us(t.get("created_time"), "created_time"),
        received_at,
        _ticker(t, "ticker"),
        price,
        _size(t.get("count_fp"), "count_fp"),
        taker == "yes",
        bool(t.get("is_block_trade", False)),
        "historical",
        "_history",
    )


def _ohlc(obj: Any, sfx: str, field: str) -> list[int]:
    if not isinstance(obj, dict):
        raise BadRow(f"{field}: expected an object")
    return [_price(obj.get(f"{k}{sfx}"), f"{field}.{k}{sfx}") for k in ("open", "low", "high", "close")]


def _opt_price(obj: dict[str, Any], key: str, field: str) -> int | None:
    value = obj.get(key)
    return None if value is None else _price(value, f"{field}.{key}")


_OHLC = ("open", "low", "high", "close")
_PRICE = ("open", "low", "high", "close", "mean", "previous")
_NAMES = {
    live: (
        tuple(f"{k}{sfx}" for k in _OHLC),
        tuple(f"{k}{sfx}" for k in _PRICE),
        "volume_fp" if live else "volume",
        "open_interest_fp" if live else "open_interest",
    )
    for live, sfx in ((True, "_dollars"), (False, ""))
}


def candle_row(c: Any, ticker: str, period: int, live: bool, received_at: int) -> CandleRow:
    """A candle (live ``*_dollars``/``*_fp`` names, or the historical endpoint's plain ones) as a candlesticks row.

    The common case runs straight through cached lookups; anything unexpected is re-read field by field so the
    :class:`BadRow` names the field."""
    ohlc, names, volume, oi = _NAMES[live]
    price, size = _cached_price, _cached_size
    try:
        end = c["end_period_ts"]
        if type(end) is int and end > 0:
            yb, ya, pr = c["yes_bid"], c["yes_ask"], c["price"]
            return (
                ticker, period, end * 1_000_000,
                *[price(yb[k]) for k in ohlc], *[price(ya[k]) for k in ohlc],
                *[None if pr[k] is None else price(pr[k]) for k in names],
                size(c[volume]), size(c[oi]), "live" if live else "historical", received_at,
            )  # fmt: skip
    except (KeyError, TypeError, ValueError, ArithmeticError):
        pass
    return _candle_row_checked(c, ticker, period, live, received_at)


def _candle_row_checked(c: Any, ticker: str, period: int, live: bool, received_at: int) -> CandleRow:
    if not isinstance(c, dict):
        raise BadRow(f"not an object ({type(c).__name__})")
    end = c.get("end_period_ts")
    if not isinstance(end, int) or isinstance(end, bool) or end <= 0:
        raise BadRow("end_period_ts: expected a positive integer")
    sfx = "_dollars" if live else ""
    price = c.get("price")
    if not isinstance(price, dict):
        raise BadRow("price: expected an object")
    prices = [_opt_price(price, f"{k}{sfx}", "price") for k in ("open", "low", "high", "close", "mean", "previous")]
    return (
        ticker,
        period,
        end * 1_000_000,
        *_ohlc(c.get("yes_bid"), sfx, "yes_bid"),
        *_ohlc(c.get("yes_ask"), sfx, "yes_ask"),
        *prices,
        _size(c.get("volume_fp" if live else "volume"), "volume"),
        _size(c.get("open_interest_fp" if live else "open_interest"), "open_interest"),
        "live" if live else "historical",
        received_at,
    )


CANDLE_COLUMNS: tuple[str, ...] = CANDLESTICKS.names
TRADE_COLUMNS: tuple[str, ...] = TRADES.production_columns
