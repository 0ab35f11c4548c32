"""The frame parser: the fast path first, the reference path for every frame it declines; never raises.

:meth:`Parser.parse` tries :mod:`kalshictl.kalshi.fast_path` (the hot order-book delta inlined here) and hands
anything it declines to :meth:`Parser.parse_reference`, which reads the frame with ``orjson`` and the per-type readers
of :mod:`kalshictl.kalshi.reference`. Bad input comes back as a ParseError whose kind is counted in
:attr:`Parser.errors`; unknown fields are tolerated and counted in :attr:`Parser.unknown_fields`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from kalshictl.kalshi.fast_path import (
    DECODER,
    DeltaFrame,
    TickerFrame,
    TradeFrame,
    read_delta,
    read_snapshot,
    read_ticker,
    read_trade,
)
from kalshictl.kalshi.fields import FieldError, identifier
from kalshictl.kalshi.records import OrderbookDelta, ParseError, Record
from kalshictl.kalshi.reference import DATA_READERS, REPLY_READERS, frame_msg
from kalshictl.kalshi.values import DELTA_CACHE, GOOD_TICKERS, ID_MAX, PRICE_CACHE
from kalshictl.units import PRICE_MAX

# Bound once: CPython 3.11 compiles ``NAME.method()`` on a name imported with ``from … import`` as a module attribute
# read plus a call (a bound method built per frame), not as a method call.
_decode = DECODER.decode

UNKNOWN_FIELDS_MAX = 1000  # distinct unknown field names remembered; the rest are counted under "(other)"


class Parser:
    """Frame parser with counters; ``use_yes_price`` undoes the subscription flag for NO-side prices."""

    def __init__(self, *, use_yes_price: bool = False) -> None:
        self.use_yes_price = use_yes_price
        self.unknown_fields: Counter[str] = Counter()
        self.unknown_total = 0  # sum of unknown_fields (read per frame by the router)
        self.errors: Counter[str] = Counter()
        self.slow = 0  # frames parsed by the reference path (declined by the fast path, or not a hot type)

    def parse(self, raw: bytes | str) -> Record | ParseError:
        """Parse one text frame; never raises."""
        try:
            f = _decode(raw)
        except Exception:  # declined (msgspec.DecodeError / ValidationError, TypeError): the reference path answers
            return self.parse_reference(raw)
        rec: Record | None
        try:  # zero-cost unless raised: a value that upsets the fast path goes to the reference path
            if type(f) is DeltaFrame:  # the common case, inline: every value from a table of values already valid
                m = f.msg
                try:
                    price = PRICE_CACHE[m.price_dollars]
                    size = DELTA_CACHE[m.delta_fp]
                except KeyError:
                    rec = read_delta(f, self.use_yes_price)  # a value not seen yet
                else:
                    ts = m.ts_ms
                    ticker = m.market_ticker
                    if ts is not None and price is not None and ticker in GOOD_TICKERS:
                        if m.side == "yes":
                            return OrderbookDelta(f.sid, f.seq, ticker, True, price, size, ts * 1000)
                        if self.use_yes_price:
                            price = PRICE_MAX - price
                        return OrderbookDelta(f.sid, f.seq, ticker, False, price, size, ts * 1000)
                    rec = read_delta(f, self.use_yes_price)
            elif type(f) is TickerFrame:
                rec = read_ticker(f)
            elif type(f) is TradeFrame:
                rec = read_trade(f)
            else:
                rec = read_snapshot(f, self.use_yes_price)
        except Exception:
            return self.parse_reference(raw)
        return self.parse_reference(raw) if rec is None else rec

    # ----- reference path ---------------------------------------------------------------------------------------
    def parse_reference(self, raw: bytes | str) -> Record | ParseError:
        """Parse one frame with the reference (pure Python) path; never raises."""
        self.slow += 1
        try:
            frame = orjson.loads(raw)
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            self.errors["json"] += 1
            return ParseError("json", str(exc)[:120])
        if not isinstance(frame, dict):
            self.errors["shape"] += 1
            return ParseError("shape", "frame is not a JSON object")
        sid, seq, mtype = frame.get("sid"), frame.get("seq"), frame.get("type")
        try:
            sid = None if sid is None else identifier(sid, "sid")
            seq = None if seq is None else identifier(seq, "seq")
            return self._read(mtype, frame, sid, seq)
        except FieldError as exc:
            self.errors[exc.kind] += 1
            return ParseError(exc.kind, exc.detail, _id_or_none(sid), _id_or_none(seq), _type_or_none(mtype))
        except Exception as exc:  # defensive: a parser bug must never take the gatherer down
            self.errors["internal"] += 1
            return ParseError("internal", f"{type(exc).__name__}: {exc}"[:160], None, None, None)

    def _read(self, mtype: Any, frame: dict[str, Any], sid: int | None, seq: int | None) -> Record:
        """The record of a decoded frame of type ``mtype``, by its reader in :mod:`kalshictl.kalshi.reference`."""
        if isinstance(mtype, str):
            data = DATA_READERS.get(mtype)
            if data is not None:
                known, needs_sid, read = data
                msg = frame_msg(frame)
                if needs_sid and sid is None:
                    raise FieldError("shape", f"{mtype} without sid")
                self._count_unknown(mtype, msg, known)
                return read(mtype, msg, sid, seq, self.use_yes_price)
            reply = REPLY_READERS.get(mtype)
            if reply is not None:
                return reply(mtype, frame, sid, seq)
        raise FieldError("type", f"unknown message type {str(mtype)[:64]!r}")

    def _count_unknown(self, mtype: str, msg: dict[str, Any], known: frozenset[str]) -> None:
        if known.issuperset(msg):
            return
        seen = self.unknown_fields
        for key in msg:
            if key not in known:
                name = f"{mtype}.{key[:64]}"
                seen[name if name in seen or len(seen) < UNKNOWN_FIELDS_MAX else "(other)"] += 1
                self.unknown_total += 1


def _id_or_none(value: Any) -> int | None:
    """A sid/seq for the ParseError if it was a valid one, else None."""
    return value if isinstance(value, int) and 0 <= value < ID_MAX else None


def _type_or_none(mtype: Any) -> str | None:
    return mtype[:64] if isinstance(mtype, str) else None
