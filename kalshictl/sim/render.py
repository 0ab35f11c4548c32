"""REST resource shapes (current fixed-point fields only; no removed integer-cent fields)."""

from __future__ import annotations

from typing import Any

from kalshictl.sim.book import NO, YES, Book
from kalshictl.sim.fmt import PRICE_STR, iso, size_str
from kalshictl.sim.markets import CATEGORIES, FREQUENCIES, WORDS, Universe

_RANGES = {
    100: ("linear_cent", [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}]),
    10: ("deci_cent", [{"start": "0.0000", "end": "1.0000", "step": "0.0010"}]),
}
_SOURCES = [{"name": "Simulated Source", "url": "https://example.invalid/source"}]


def _word(u: Universe, s: int) -> str:
    name = u.series_names[s].removeprefix("KXMVE").removeprefix("KX")
    return name.rstrip("0123456789") or name


_MARKET_CONSTANTS = {
    "market_type": "binary",
    "settlement_timer_seconds": 300,
    "can_close_early": True,
    "notional_value_dollars": "1.0000",
    "settlement_bounds_type": "default",
    "expiration_value": "",
    "early_close_condition": "This market may close early if the outcome is known.",
    "strike_type": "greater",
    "rules_secondary": "Simulated market served by kalshictl sim.",
    "exchange_index": 0,
}


def market_dict(u: Universe, idx: int) -> dict:
    """The ``Market`` object of market ``idx``."""
    st = u.states.get(idx)
    if st is None:
        st = u._initial_state(idx)
    e = u.mk_event[idx]
    event_ticker = u.event_ticker(e)
    k = idx - u.ev_first[e]
    word = _word(u, u.ev_series[e])
    yb, ybs, ya, yas = st.book.top()
    structure, ranges = _RANGES[u.tick(idx)]
    close = st.close_ts
    later = iso(close + 7 * 86400)
    d = dict(_MARKET_CONSTANTS)
    d["ticker"] = f"{event_ticker}-T{k}"
    d["event_ticker"] = event_ticker
    d["title"] = f"Will {word} be above {k} (event {e})?"
    d["subtitle"] = d["yes_sub_title"] = f"Above {k}"
    d["no_sub_title"] = f"{k} or below"
    d["created_time"] = iso(st.created_ts)
    d["updated_time"] = iso(st.updated_ts)
    d["open_time"] = iso(st.open_ts)
    d["close_time"] = iso(close)
    d["expected_expiration_time"] = iso(close + 3600)
    d["expiration_time"] = d["latest_expiration_time"] = later
    d["status"] = st.status
    d["yes_bid_dollars"] = PRICE_STR[yb]
    d["yes_bid_size_fp"] = size_str(ybs)
    d["yes_ask_dollars"] = PRICE_STR[ya]
    d["yes_ask_size_fp"] = size_str(yas)
    d["no_bid_dollars"] = PRICE_STR[10_000 - ya]
    d["no_ask_dollars"] = PRICE_STR[10_000 - yb]
    d["last_price_dollars"] = PRICE_STR[st.last_price]
    volume = st.volume
    d["volume_fp"] = size_str(volume)
    d["volume_24h_fp"] = size_str(volume // 300 * 100 if volume % 100 == 0 else volume // 3)
    d["result"] = st.result
    d["open_interest_fp"] = size_str(st.oi)
    d["previous_yes_bid_dollars"] = PRICE_STR[st.prev_yes_bid]
    d["previous_yes_ask_dollars"] = PRICE_STR[st.prev_yes_ask]
    d["previous_price_dollars"] = PRICE_STR[st.prev_price]
    d["floor_strike"] = k
    d["rules_primary"] = f"If {word} is above {k} at close, the market resolves to Yes."
    d["price_level_structure"] = structure
    d["price_ranges"] = ranges
    if st.settlement_value >= 0:
        d["settlement_value_dollars"] = PRICE_STR[st.settlement_value]
        d["expiration_value"] = "above" if st.result == "yes" else "below"
    if st.settled_ts:
        d["settlement_ts"] = iso(st.settled_ts)
    if u.is_mve(idx):
        d["mve_collection_ticker"] = u.series_names[u.ev_series[e]]
        d["mve_selected_legs"] = []
    return d


def event_dict(u: Universe, e: int, nested: bool = False) -> dict:
    """The ``EventData`` object of event ``e`` (with ``markets`` when ``nested``)."""
    s = u.ev_series[e]
    h = u.event_hash(e)
    mutually_exclusive = u.ev_count[e] > 1 and h & 1 == 1
    created = u.event_times(e)[0]
    d: dict[str, Any] = {
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
