"""Parse Kalshi WebSocket frames into typed records, in kalshictl's exact integer units: the package's public face.

Accepts the current fixed-point shapes (``price_dollars`` / ``delta_fp`` / ``yes_dollars_fp`` ...) and the legacy
integer-cent shapes recorded before 2026-03-12 (``price`` / ``delta`` / ``yes`` ...); numeric values may arrive as
JSON numbers or strings. :meth:`Parser.parse` never raises: bad input (malformed JSON, unknown type, missing or
out-of-range values) comes back as a :class:`ParseError` with a ``kind`` (json | shape | type | value) that callers
count; ``internal`` would mean a parser bug and the fuzz tests fail on it. Unknown *fields* are tolerated (Kalshi
adds fields) and reported in :attr:`Parser.unknown_fields` so they show up in metrics (at most
:data:`UNKNOWN_FIELDS_MAX` names, the rest under ``"(other)"``). Every numeric value is bounded before any arithmetic
(:mod:`kalshictl.units`) and every ticker obeys the REST rule (:mod:`kalshictl.kalshi.validate`), so a hostile frame
costs microseconds and is refused (docs/security.md, "Bad input and what it gets").

Two paths, one answer:

* **fast path** (the hot types ``orderbook_delta``, ``orderbook_snapshot``, ``trade``, ``ticker`` in their current
  shape): :mod:`kalshictl.kalshi.fast_path`, msgspec structs validated in compiled code;
* **reference path** (everything else: legacy shapes, numbers given as strings, unknown fields, lifecycle and
  control frames, and every frame the fast path declines): :mod:`kalshictl.kalshi.reference`, ``orjson`` + the
  per-field readers of :mod:`kalshictl.kalshi.fields`.

The fast path only ever *accepts* a frame the reference path would turn into the same record
(tests/kalshi/test_parser_fuzz.py checks the two against each other on mutated frames).

The parts: :mod:`~kalshictl.kalshi.records` (the record types), :mod:`~kalshictl.kalshi.values` (bounded prices,
sizes, tickers), :mod:`~kalshictl.kalshi.fields`, :mod:`~kalshictl.kalshi.fast_path`,
:mod:`~kalshictl.kalshi.reference` and :mod:`~kalshictl.kalshi.parser` (:class:`Parser`). Units: prices in
ten-thousandths of a dollar, sizes in hundredths of a contract, times in microseconds (see :mod:`kalshictl.units`).
``side``/``taker_side`` are booleans, ``True`` = YES.
"""

from __future__ import annotations

from kalshictl.kalshi.parser import UNKNOWN_FIELDS_MAX, Parser
from kalshictl.kalshi.records import (
    ERROR_KINDS,
    Ack,
    ErrorMsg,
    FeeUpdate,
    Lifecycle,
    OrderbookDelta,
    OrderbookSnapshot,
    ParseError,
    Record,
    Subscribed,
    TickerUpdate,
    Trade,
)
from kalshictl.kalshi.values import ID_MAX, TS_US_MAX, price_value, size_value

__all__ = [
    "ERROR_KINDS",
    "ID_MAX",
    "TS_US_MAX",
    "UNKNOWN_FIELDS_MAX",
    "Ack",
    "ErrorMsg",
    "FeeUpdate",
    "Lifecycle",
    "OrderbookDelta",
    "OrderbookSnapshot",
    "ParseError",
    "Parser",
    "Record",
    "Subscribed",
    "TickerUpdate",
    "Trade",
    "price_value",
    "size_value",
]
