"""Production rows as Kalshi's WebSocket message bodies (docs/sim.md "WebSocket": the shapes ``kalshictl.sim`` sends).

Prices and sizes come back in Kalshi's fixed-point strings (``"0.4100"``, ``"12.00"``) from production's integer
units (migrations/README.md). Lifecycle messages are replayed as recorded (production keeps each message's body in
``payload``): multivariate (``KXMVE…``) tickers on ``multivariate_market_lifecycle``, the rest on
``market_lifecycle_v2``; ``event_lifecycle`` and ``event_fee_update`` keep their own types.
"""

from __future__ import annotations

import orjson

from kalshictl.research.book import Book
from kalshictl.sim.fmt import PRICE_STR, iso, size_str
from kalshictl.sim.subscriptions import LIFECYCLE, MVE_LIFECYCLE, MVE_PREFIX
from kalshictl.units import PRICE_MAX


def delta_body(ticker: str, side: bool, price: int, size_delta: int, ts_us: int, yes_price: bool = False) -> bytes:
    """An ``orderbook_delta`` msg; with ``use_yes_price`` a NO-side price is given as its YES equivalent."""
    ts_ms = ts_us // 1000
    shown = PRICE_MAX - price if yes_price and not side else price
    return orjson.dumps(
        {
            "market_ticker": ticker,
            "price_dollars": PRICE_STR[shown],
            "delta_fp": size_str(size_delta),
            "side": "yes" if side else "no",
            "ts": iso(ts_ms // 1000),
            "ts_ms": ts_ms,
        }
    )


def snapshot_body(ticker: str, book: Book, yes_price: bool = False) -> bytes:
    """An ``orderbook_snapshot`` msg: bids per side ascending (an empty side is left out, as Kalshi does)."""
    msg: dict = {"market_ticker": ticker}
    yes = book.bids(True)
    if yes:
        msg["yes_dollars_fp"] = [[PRICE_STR[p], size_str(s)] for p, s in yes]
    if book.no:
        no = sorted((PRICE_MAX - p, s) for p, s in book.no.items()) if yes_price else book.bids(False)
        msg["no_dollars_fp"] = [[PRICE_STR[p], size_str(s)] for p, s in no]
    return orjson.dumps(msg)


def trade_body(row: tuple, shift_us: int = 0) -> bytes:
    """A ``trade`` msg from a ``trades`` row (exchange_ts, trade_id, ticker, price, size, taker_side, is_block), its
    time moved by ``shift_us``."""
    ts_us, trade_id, ticker, price, size, taker_yes, block = row
    ts_us += shift_us
    taker = "yes" if taker_yes else "no"
    ts_ms = ts_us // 1000
    return orjson.dumps(
        {
            "trade_id": trade_id,
            "market_ticker": ticker,
            "yes_price_dollars": PRICE_STR[price],
            "no_price_dollars": PRICE_STR[PRICE_MAX - price],
            "count_fp": size_str(size),
            "taker_side": taker,
            "taker_outcome_side": taker,
            "taker_book_side": "bid" if taker_yes else "ask",
            "is_block_trade": bool(block),
            "ts_ms": ts_ms,
            "ts": ts_ms // 1000,
        }
    )


_TICKER_PRICES = ("yes_bid_dollars", "yes_ask_dollars", "price_dollars")
_TICKER_SIZES = ("volume_fp", "open_interest_fp")
_TICKER_SIZES_2 = ("yes_bid_size_fp", "yes_ask_size_fp", "last_trade_size_fp")


def ticker_body(row: tuple, shift_us: int = 0) -> bytes:
    """A ``ticker`` msg from a ``tickers`` row (time moved by ``shift_us``); columns not recorded are left out."""
    ts_us, ticker, yb, ya, last, volume, oi, dvol, doi, ybs, yas, lts = row
    ts_us += shift_us
    ts_ms = ts_us // 1000
    msg: dict = {"market_ticker": ticker}
    for key, value in zip(_TICKER_PRICES, (yb, ya, last), strict=True):
        if value is not None:
            msg[key] = PRICE_STR[value]
    for key, value in zip(_TICKER_SIZES, (volume, oi), strict=True):
        if value is not None:
            msg[key] = size_str(value)
    if dvol is not None:
        msg["dollar_volume"] = dvol
    if doi is not None:
        msg["dollar_open_interest"] = doi
    for key, value in zip(_TICKER_SIZES_2, (ybs, yas, lts), strict=True):
        if value is not None:
            msg[key] = size_str(value)
    msg["ts_ms"] = ts_ms
    msg["ts"] = ts_ms // 1000
    msg["time"] = iso(ts_ms // 1000)
    return orjson.dumps(msg)


def lifecycle_route(ticker: str, event_type: str) -> tuple[str, str]:
    """(channel, message type) of a recorded lifecycle row."""
    channel = MVE_LIFECYCLE if ticker.startswith(MVE_PREFIX) else LIFECYCLE
    if event_type == "event_fee_update":
        return LIFECYCLE, "event_fee_update"
    if event_type == "event_lifecycle":
        return channel, "event_lifecycle"
    return channel, channel
