"""The fast path for the four hot frame types (``orderbook_delta``, ``orderbook_snapshot``, ``trade``, ``ticker``) in
their current shape (docs/sim.md lists it).

``msgspec`` decodes a frame straight into the typed structs below (tagged on ``type``), validating types, bounds and
enumerations in compiled code and refusing unknown fields; prices go through the table of every price string seen
and sizes through integer arithmetic on the string (:mod:`kalshictl.kalshi.values`). A reader returns the record, or
None to *decline*: the reference path (:mod:`kalshictl.kalshi.reference`) then gives the authoritative record or
error. The fast path only ever accepts a frame the reference path would turn into the same record
(tests/kalshi/test_parser_fuzz.py checks the two against each other on mutated frames).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from kalshictl.kalshi.records import OrderbookDelta, OrderbookSnapshot, TickerUpdate, Trade
from kalshictl.kalshi.validate import TRADE_ID
from kalshictl.kalshi.values import (
    BIGINT,
    GOOD_TICKERS,
    ID_MAX,
    PRICE_CACHE,
    SIZE_CACHE,
    TS_MS_MAX,
    price_str,
    size_str,
    ticker_ok,
)
from kalshictl.units import PRICE_MAX

_Ticker = Annotated[str, Meta(min_length=1, max_length=128)]
_Id = Annotated[int, Meta(ge=0, le=ID_MAX - 1)]
_TsMs = Annotated[int, Meta(ge=0, lt=TS_MS_MAX)]
_Big = Annotated[int, Meta(gt=-BIGINT, lt=BIGINT)]


class DeltaMsg(Struct, forbid_unknown_fields=True, gc=False):
    market_ticker: _Ticker
    price_dollars: str
    delta_fp: str
    side: Literal["yes", "no"]
    ts_ms: _TsMs | None = None
    ts: Any = None
    market_id: Any = None
    client_order_id: Any = None
    subaccount: Any = None


class DeltaFrame(Struct, tag_field="type", tag="orderbook_delta", gc=False):
    sid: _Id
    seq: _Id
    msg: DeltaMsg


class SnapMsg(Struct, forbid_unknown_fields=True, gc=False):
    market_ticker: _Ticker
    yes_dollars_fp: list[tuple[str, str]] | UnsetType | None = UNSET
    no_dollars_fp: list[tuple[str, str]] | UnsetType | None = UNSET
    market_id: Any = None


class SnapFrame(Struct, tag_field="type", tag="orderbook_snapshot", gc=False):
    sid: _Id
    seq: _Id
    msg: SnapMsg


class TradeMsg(Struct, forbid_unknown_fields=True, gc=False):
    trade_id: str
    market_ticker: _Ticker
    count_fp: str
    ts_ms: _TsMs
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    taker_side: str | UnsetType = UNSET
    taker_outcome_side: str | UnsetType = UNSET
    taker_book_side: Any = None
    is_block_trade: Any = False
    ts: Any = None


class TradeFrame(Struct, tag_field="type", tag="trade", gc=False):
    msg: TradeMsg
    sid: _Id | None = None


class TickerMsg(Struct, forbid_unknown_fields=True, gc=False):
    market_ticker: _Ticker
    ts_ms: _TsMs
    price_dollars: str | None = None
    yes_bid_dollars: str | None = None
    yes_ask_dollars: str | None = None
    volume_fp: str | None = None
    open_interest_fp: str | None = None
    dollar_volume: _Big | None = None
    dollar_open_interest: _Big | None = None
    yes_bid_size_fp: str | None = None
    yes_ask_size_fp: str | None = None
    last_trade_size_fp: str | None = None
    market_id: Any = None
    ts: Any = None
    time: Any = None
    Clock: Any = None


class TickerFrame(Struct, tag_field="type", tag="ticker", gc=False):
    msg: TickerMsg
    sid: _Id | None = None


# Raises msgspec.DecodeError (ValidationError included) or TypeError on anything it does not take: the parser then
# hands the frame to the reference path.
DECODER = msgspec.json.Decoder(DeltaFrame | TickerFrame | TradeFrame | SnapFrame)


# The spelling Kalshi sends (a quicker test than TRADE_ID, which it implies).
_UUID_CANON = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


class _Declined(Exception):
    """A value the fast path does not take (the reader returns None)."""


# ----------------------------------------------------------------------------------------------------------------
# readers: the record, or None = decline


def read_delta(f: DeltaFrame, use_yes_price: bool) -> OrderbookDelta | None:
    """An order-book delta whose values are not all in the tables yet (the parser inlines the common case)."""
    m = f.msg
    if not ticker_ok(m.market_ticker):
        return None
    price = price_str(m.price_dollars)
    size = size_str(m.delta_fp, True)
    if price is None or size is None:
        return None
    ts = m.ts_ms
    if ts is None and m.ts is not None:
        return None  # legacy ts: the reference path reads it
    yes = m.side == "yes"
    if use_yes_price and not yes:
        price = PRICE_MAX - price
    return OrderbookDelta(f.sid, f.seq, m.market_ticker, yes, price, size, None if ts is None else ts * 1000)


def read_ticker(f: TickerFrame) -> TickerUpdate | None:
    """A ticker update; absent optional values stay None."""
    m = f.msg
    ticker = m.market_ticker
    if ticker not in GOOD_TICKERS and not ticker_ok(ticker):
        return None
    p, s = PRICE_CACHE, SIZE_CACHE
    try:  # every value already in the tables: dictionary lookups only
        return TickerUpdate(
            f.sid,
            ticker,
            m.ts_ms * 1000,
            p[m.yes_bid_dollars],
            p[m.yes_ask_dollars],
            p[m.price_dollars],
            s[m.volume_fp],
            s[m.open_interest_fp],
            m.dollar_volume,
            m.dollar_open_interest,
            s[m.yes_bid_size_fp],
            s[m.yes_ask_size_fp],
            s[m.last_trade_size_fp],
        )
    except KeyError:
        return _ticker_update(f)


def _ticker_update(f: TickerFrame) -> TickerUpdate | None:
    """:func:`read_ticker` with values not all in the tables yet."""
    m = f.msg
    try:
        bid, ask, last = _price(m.yes_bid_dollars), _price(m.yes_ask_dollars), _price(m.price_dollars)
        vol, oi = _size(m.volume_fp), _size(m.open_interest_fp)
        bid_size, ask_size = _size(m.yes_bid_size_fp), _size(m.yes_ask_size_fp)
        last_size = _size(m.last_trade_size_fp)
    except _Declined:
        return None
    return TickerUpdate(
        f.sid,
        m.market_ticker,
        m.ts_ms * 1000,
        bid,
        ask,
        last,
        vol,
        oi,
        m.dollar_volume,
        m.dollar_open_interest,
        bid_size,
        ask_size,
        last_size,
    )


def read_trade(f: TradeFrame) -> Trade | None:
    """A trade at its YES price; the taker's side from ``taker_outcome_side``, else ``taker_side``."""
    m = f.msg
    tid = m.trade_id
    ticker = m.market_ticker
    taker = m.taker_outcome_side if m.taker_outcome_side is not UNSET else m.taker_side
    if taker == "yes":
        yes = True
    elif taker == "no":
        yes = False
    else:
        return None
    if not (ticker in GOOD_TICKERS or ticker_ok(ticker)) or not (_UUID_CANON.match(tid) or _uuid(tid)):
        return None
    try:  # the values already in the tables (an absent yes price is None: the no price is read below)
        price = PRICE_CACHE[m.yes_price_dollars]
        size = SIZE_CACHE[m.count_fp]
    except KeyError:
        price = size = None
    if price is None:
        price = _trade_price(m)
    if size is None:
        size = size_str(m.count_fp, False)
    if price is None or size is None:
        return None
    return Trade(f.sid, tid, ticker, m.ts_ms * 1000, price, size, yes, m.is_block_trade is True)


def read_snapshot(f: SnapFrame, use_yes_price: bool) -> OrderbookSnapshot | None:
    """A full book; a frame with neither side's key is left to the reference path."""
    m = f.msg
    if not ticker_ok(m.market_ticker) or (m.yes_dollars_fp is UNSET and m.no_dollars_fp is UNSET):
        return None
    yes = _levels(m.yes_dollars_fp)
    no = _levels(m.no_dollars_fp)
    if yes is None or no is None:
        return None
    if use_yes_price:
        no = sorted((PRICE_MAX - p, s) for p, s in no)
    return OrderbookSnapshot(f.sid, f.seq, m.market_ticker, yes, no)


# ----------------------------------------------------------------------------------------------------------------
# values


def _price(s: str | None) -> int | None:
    """An optional price: None -> None; invalid -> _Declined."""
    if s is None:
        return None
    v = price_str(s)
    if v is None:
        raise _Declined
    return v


def _size(s: str | None) -> int | None:
    """An optional count: None -> None; invalid -> _Declined."""
    if s is None:
        return None
    v = size_str(s, False)
    if v is None:
        raise _Declined
    return v


def _uuid(tid: str) -> bool:
    """Any UUID spelling PostgreSQL accepts (hyphens optional, either case)."""
    return len(tid) <= 128 and TRADE_ID.match(tid) is not None


def _trade_price(m: TradeMsg) -> int | None:
    """The YES price: ``yes_price_dollars``, else the complement of ``no_price_dollars``; None if invalid/absent."""
    if m.yes_price_dollars is not None:
        return price_str(m.yes_price_dollars)
    if m.no_price_dollars is None:
        return None
    no = price_str(m.no_price_dollars)
    return None if no is None else PRICE_MAX - no


def _levels(levels: list[tuple[str, str]] | UnsetType | None) -> list[tuple[int, int]] | None:
    """A book side -> ``[(price, size)]`` ascending, the last size of a price kept; None if a level is invalid."""
    out: dict[int, int] = {}
    if isinstance(levels, list):
        prices, sizes = PRICE_CACHE.get, SIZE_CACHE.get  # the tables first, without a call per value
        for p, s in levels:
            price = prices(p)
            if price is None:
                price = price_str(p)
            size = sizes(s)
            if size is None:
                size = size_str(s, False)
            if price is None or size is None:
                return None
            out[price] = size
    return sorted(out.items())
