"""Pure order-book rebuild logic in exact integer units (no Decimal, no float, no I/O).

A book holds **bids only** per side, as Kalshi's order book does (docs/research.md, "book"): ``yes`` maps YES-leg price
-> size and ``no`` maps NO-leg price -> size (prices in 1e-4 USD, sizes in 1e-2 contracts). A YES bid at p is a NO ask
at 1 - p, so the YES-price view of the book is ``yes_bids`` plus ``yes_asks = [(10000 - p, s) for (p, s) in no_bids]``.

Deltas are additive, so the book after *all* deltas of one millisecond does not depend on their order within it.
Within a millisecond the exchange's true order is not stored (production keys deltas by ``exchange_ts`` and an
occurrence number), so a level may pass through a transient negative size mid-millisecond; only a negative level at
a millisecond boundary is an anomaly (evidence of missing data). :meth:`Book.apply` therefore keeps negative levels
exactly instead of clamping them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

PRICE_MAX = 10_000

Level = tuple[int, int]
# One delta as stored in production: (exchange_ts µs, side True=YES, price, size_delta, occurrence)
Delta = tuple[int, bool, int, int, int]


def _side_name(side: bool) -> str:
    return "yes" if side else "no"


@dataclass
class Book:
    """Bids per side: price -> size. Zero levels are removed; negative levels are kept (see module docs)."""

    yes: dict[int, int] = field(default_factory=dict)
    no: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_levels(cls, yes_bids: Iterable[Sequence[int]], no_bids: Iterable[Sequence[int]]) -> Book:
        """Build from ``[[price, size], ...]`` level lists (the snapshot JSONB ``yes_bids``/``no_bids``)."""
        book = cls()
        for side, levels in ((True, yes_bids), (False, no_bids)):
            target = book.side(side)
            for price, size in levels or ():
                if int(size) != 0:
                    target[int(price)] = target.get(int(price), 0) + int(size)
        return book

    def side(self, side: bool) -> dict[int, int]:
        """The level map of a side (True = YES)."""
        return self.yes if side else self.no

    def apply(self, side: bool, price: int, size_delta: int) -> None:
        """Add a signed size change to a level; a level reaching exactly 0 is removed."""
        levels = self.yes if side else self.no
        new = levels.get(price, 0) + size_delta
        if new == 0:
            levels.pop(price, None)
        else:
            levels[price] = new

    def apply_all(self, deltas: Iterable[Delta]) -> None:
        """Apply deltas (any order within a millisecond gives the same book at the millisecond's end)."""
        for _ts, side, price, size_delta, _occ in deltas:
            self.apply(side, price, size_delta)

    def copy(self) -> Book:
        """An independent copy."""
        return Book(dict(self.yes), dict(self.no))

    def negative_levels(self) -> list[tuple[str, int, int]]:
        """Levels with a negative size: (side, price, size). Non-empty at a millisecond boundary = missing data."""
        return [(_side_name(s), p, v) for s in (True, False) for p, v in sorted(self.side(s).items()) if v < 0]

    # -- views -----------------------------------------------------------------------------------------------
    def bids(self, side: bool, depth: int = 0) -> list[Level]:
        """A side's bids ascending by price (best last); ``depth`` > 0 keeps the best ``depth`` levels."""
        levels = sorted(self.side(side).items())
        return levels[-depth:] if depth > 0 else levels

    def asks(self, side: bool, depth: int = 0) -> list[Level]:
        """A side's asks ascending by price (best first): the other side's bids at ``10000 - p``."""
        levels = sorted((PRICE_MAX - p, s) for p, s in self.side(not side).items())
        return levels[:depth] if depth > 0 else levels

    def best_bid(self, side: bool = True) -> Level | None:
        """(price, size) of a side's best bid, or None when that side is empty."""
        levels = self.side(side)
        if not levels:
            return None
        price = max(levels)
        return price, levels[price]

    def best_ask(self, side: bool = True) -> Level | None:
        """(price, size) of a side's best ask (1 - the other side's best bid), or None."""
        other = self.best_bid(not side)
        return None if other is None else (PRICE_MAX - other[0], other[1])

    def top(self) -> dict[str, int | None]:
        """Best YES bid/ask with sizes and the spread (None where a side is empty)."""
        bid, ask = self.best_bid(True), self.best_ask(True)
        return {
            "best_yes_bid": bid[0] if bid else None,
            "best_yes_bid_size": bid[1] if bid else None,
            "best_yes_ask": ask[0] if ask else None,
            "best_yes_ask_size": ask[1] if ask else None,
            "spread": ask[0] - bid[0] if bid and ask else None,
        }

    def as_dict(self, depth: int = 0) -> dict[str, Any]:
        """JSON-ready view in integer units: top of book plus all four level lists, ascending by price."""
        return {
            **self.top(),
            "yes_bids": [list(lv) for lv in self.bids(True, depth)],
            "yes_asks": [list(lv) for lv in self.asks(True, depth)],
            "no_bids": [list(lv) for lv in self.bids(False, depth)],
            "no_asks": [list(lv) for lv in self.asks(False, depth)],
        }


@dataclass(frozen=True)
class LevelDiff:
    """One level where two books disagree (sizes; 0 = level absent)."""

    side: str
    price: int
    expected: int
    rebuilt: int

    def as_dict(self) -> dict[str, Any]:
        return {"side": self.side, "price": self.price, "expected": self.expected, "rebuilt": self.rebuilt}


def diff(expected: Book, rebuilt: Book) -> list[LevelDiff]:
    """Every (side, price) whose size differs, bids in each side's own leg price, sorted."""
    out = []
    for side in (True, False):
        a, b = expected.side(side), rebuilt.side(side)
        for price in sorted(set(a) | set(b)):
            if a.get(price, 0) != b.get(price, 0):
                out.append(LevelDiff(_side_name(side), price, a.get(price, 0), b.get(price, 0)))
    return out


def add_difference(book: Book, expected: Book, rebuilt: Book) -> None:
    """Add ``expected - rebuilt`` to ``book`` level by level (re-aligns a replay after a detected gap)."""
    for d in diff(expected, rebuilt):
        book.apply(d.side == "yes", d.price, d.expected - d.rebuilt)


def group_by_ms(deltas: Iterable[Delta]) -> Iterator[tuple[int, list[Delta]]]:
    """Group a (exchange_ts, ...)-ordered delta stream into (exchange_ts, deltas) batches."""
    batch: list[Delta] = []
    current = 0  # the exchange_ts of batch (meaningless while batch is empty)
    for delta in deltas:
        if batch and delta[0] != current:
            yield current, batch
            batch = []
        current = delta[0]
        batch.append(delta)
    if batch:
        yield current, batch


def rebuild(snapshot: Book, deltas: Iterable[Delta]) -> Book:
    """The book after applying ``deltas`` to a copy of ``snapshot``."""
    book = snapshot.copy()
    book.apply_all(deltas)
    return book
