"""REST resource shapes (current fixed-point fields only; no removed integer-cent fields)."""

from __future__ import annotations

from kalshictl.sim.book import NO, YES, Book
from kalshictl.sim.fmt import PRICE_STR, iso, size_str
from kalshictl.sim.markets import CATEGORIES, FREQUENCIES, WORDS, Universe

_RANGES = {
    100: ("linear_cent", [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}]),
    10: ("deci_cent", [{"start": "0.0000", "end": "1.0000", "step": "0.0010"}]),
}
_SOURCES = [{"name": "Simulated Source", "url": "https://example.invalid/source"}]


def _word(u: Universe, s: int) -> str:
    name = u.series_names[s][2:]
    return name.rstrip("0123456789") or name


def market_dict(u: Universe, idx: int) -> dict:
    """The ``Market`` object of market ``idx``."""
    st = u.peek(idx)
    e = u.mk_event[idx]
    s = u.ev_series[e]
    k = idx - u.ev_first[e]
    word = _word(u, s)
    yb, ybs, ya, yas = st.book.top()
    structure, ranges = _RANGES[u.tick(idx)]
    close = st.close_ts
    d = {
        "ticker": f"{u.series_names[s]}-E{e}-T{k}",
        "event_ticker": f"{u.series_names[s]}-E{e}",
        "market_type": "binary",
        "title": f"Will {word} be above {k} (event {e})?",
        "subtitle": f"Above {k}",
        "yes_sub_title": f"Above {k}",
        "no_sub_title": f"{k} or below",
        "created_time": iso(st.created_ts),
        "updated_time": iso(st.updated_ts),
        "open_time": iso(st.open_ts),
        "close_time": iso(close),
        "expected_expiration_time": iso(close + 3600),
        "expiration_time": iso(close + 7 * 86400),
        "latest_expiration_time": iso(close + 7 * 86400),
        "settlement_timer_seconds": 300,
        "status": st.status,
        "yes_bid_dollars": PRICE_STR[yb],
        "yes_bid_size_fp": size_str(ybs),
        "yes_ask_dollars": PRICE_STR[ya],
        "yes_ask_size_fp": size_str(yas),
        "no_bid_dollars": PRICE_STR[10_000 - ya],
        "no_ask_dollars": PRICE_STR[10_000 - yb],
        "last_price_dollars": PRICE_STR[st.last_price],
        "volume_fp": size_str(st.volume),
        "volume_24h_fp": size_str(st.volume // 300 * 100 if st.volume % 100 == 0 else st.volume // 3),
        "result": st.result,
        "can_close_early": True,
        "open_interest_fp": size_str(st.oi),
        "notional_value_dollars": "1.0000",
        "previous_yes_bid_dollars": PRICE_STR[st.prev_yes_bid],
        "previous_yes_ask_dollars": PRICE_STR[st.prev_yes_ask],
        "previous_price_dollars": PRICE_STR[st.prev_price],
        "settlement_bounds_type": "default",
        "expiration_value": "",
        "early_close_condition": "This market may close early if the outcome is known.",
        "strike_type": "greater",
        "floor_strike": k,
        "rules_primary": f"If {word} is above {k} at close, the market resolves to Yes.",
        "rules_secondary": "Simulated market served by kalshictl sim.",
        "price_level_structure": structure,
        "price_ranges": ranges,
        "exchange_index": 0,
    }
    if st.settlement_value >= 0:
        d["settlement_value_dollars"] = PRICE_STR[st.settlement_value]
        d["expiration_value"] = "above" if st.result == "yes" else "below"
    if st.settled_ts:
        d["settlement_ts"] = iso(st.settled_ts)
    return d


def event_dict(u: Universe, e: int, nested: bool = False) -> dict:
    """The ``EventData`` object of event ``e`` (with ``markets`` when ``nested``)."""
    s = u.ev_series[e]
    h = u.event_hash(e)
    mutually_exclusive = u.ev_count[e] > 1 and h & 1 == 1
    created = u.event_times(e)[0]
    d = {
        "event_ticker": u.event_ticker(e),
        "series_ticker": u.series_names[s],
        "sub_title": f"Event {e}",
        "title": f"{_word(u, s)} outcome, event {e}",
        "collateral_return_type": "MECNET" if mutually_exclusive else "",
        "mutually_exclusive": mutually_exclusive,
        "category": CATEGORIES[s % len(CATEGORIES)],
        "strike_period": FREQUENCIES[s % len(FREQUENCIES)],
        "product_metadata": {},
        "settlement_sources": _SOURCES,
        "last_updated_ts": iso(created),
        "exchange_index": 0,
    }
    if nested:
        d["markets"] = [market_dict(u, i) for i in u.event_markets(e)]
    return d


def series_dict(u: Universe, s: int) -> dict:
    """The ``Series`` object of series ``s``."""
    word = _word(u, s)
    return {
        "ticker": u.series_names[s],
        "frequency": FREQUENCIES[s % len(FREQUENCIES)],
        "title": f"{word} series {s}",
        "category": CATEGORIES[s % len(CATEGORIES)],
        "categories": [CATEGORIES[s % len(CATEGORIES)]],
        "tags": [word if word in WORDS else "sim"],
        "settlement_sources": _SOURCES,
        "contract_url": "https://example.invalid/contract.pdf",
        "contract_terms_url": "https://example.invalid/terms.pdf",
        "product_metadata": {},
        "fee_type": "quadratic",
        "fee_multiplier": 1.0,
        "additional_prohibitions": [],
        "volume_fp": "0.00",
        "last_updated_ts": iso(u.anchor_ts),
        "exchange_index": 0,
    }


def orderbook_fp(book: Book, depth: int = 0) -> dict:
    """``{"yes_dollars": [[p$, count_fp], ...], "no_dollars": [...]}``, ascending (best bid last)."""
    return {
        "yes_dollars": [[PRICE_STR[p], size_str(s)] for p, s in book.levels(YES, depth)],
        "no_dollars": [[PRICE_STR[p], size_str(s)] for p, s in book.levels(NO, depth)],
    }
