"""Validation of REST objects before they enter the gatherer; the ticker rule's one home (the WebSocket parser,
:mod:`kalshictl.kalshi.messages`, and the REST paths of the gatherer apply it).

A ticker is a non-empty string of at most :data:`MAX_TICKER_LEN` printable, non-space characters without a comma
(``GET /markets?tickers=A,B`` and ``/markets/orderbooks`` join tickers with commas) and without NUL; it must fit the
``varchar(128)`` ticker columns. Anything else from ``GET /markets`` is skipped and counted, never a traceback.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

MAX_TICKER_LEN = 128  # the tables' varchar(128)
# A trade id: a UUID, hyphens optional (PostgreSQL's uuid input); the WebSocket parser and the REST backfill use it.
TRADE_ID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\Z")
_LOGGED_PER_REASON = 5

log = logging.getLogger("kalshictl.kalshi.validate")


def is_ticker(value: str) -> bool:
    """Whether the string ``value`` is an acceptable ticker (the rule; :func:`ticker_problem` says why not)."""
    return 0 < len(value) <= MAX_TICKER_LEN and value.isprintable() and " " not in value and "," not in value


def ticker_problem(value: Any) -> str | None:
    """Why ``value`` is not an acceptable ticker, or None if it is."""
    if isinstance(value, str) and is_ticker(value):
        return None
    if not isinstance(value, str) or not value:
        return "ticker missing or not a string"
    if len(value) > MAX_TICKER_LEN:
        return f"ticker longer than {MAX_TICKER_LEN} characters"
    if not value.isprintable() or " " in value or "," in value:  # isprintable: no NUL, control or other space
        return "ticker has a control, space or comma character"
    return None


def valid_markets(items: Iterable[Any], rejected: Counter[str]) -> Iterator[dict[str, Any]]:
    """The market objects of a ``GET /markets`` page that can be recorded; others are counted in ``rejected``.

    A non-object item or a bad ticker is skipped (counted by reason, the first few logged); a missing or non-string
    ``status`` is left for the caller's default.
    """
    for item in items:
        problem = "not an object" if not isinstance(item, dict) else ticker_problem(item.get("ticker"))
        if problem is None:
            yield item
            continue
        rejected[problem] += 1
        if rejected[problem] <= _LOGGED_PER_REASON:
            excerpt = repr(item.get("ticker") if isinstance(item, dict) else item)[:60]
            log.warning("GET /markets: skipped an item (%s): %s", problem, excerpt)
