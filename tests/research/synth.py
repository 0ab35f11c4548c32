"""A small seeded order-book process for tests: deltas (with same-ms duplicates) and REST snapshots with receive lag."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from kalshictl.research.book import Book, Delta, rebuild

T0 = 1_800_000_000_000_000  # µs, 2027-01-15


@dataclass
class Market:
    ticker: str
    base: Book  # state at T0 - 1 ms
    deltas: list[Delta]  # exchange_ts-ordered (true order)
    rest: list[tuple[int, int, Book]]  # (receive ts µs, exchange instant µs, book)

    def book_at(self, ts: int) -> Book:
        return rebuild(self.base, [d for d in self.deltas if d[0] <= ts])


def simulate(ticker: str = "SYN-1", seed: int = 1, n: int = 3000, rest_every: int = 150) -> Market:
    rng = random.Random(seed)
    base = Book()
    for _ in range(8):
        base.apply(rng.random() < 0.5, rng.randrange(100, 9900, 100), rng.randint(1, 50) * 100)
    book, deltas, occ = base.copy(), [], Counter()
    ts = T0
    for i in range(n):
        if i and rng.random() < 0.6:
            ts += rng.choice([1000, 20000, 50000, 100000])
        if deltas and rng.random() < 0.02:  # an identical repeat in the same millisecond
            _, side, price, d, _ = deltas[-1]
            if book.side(side).get(price, 0) + d < 0:
                continue
        else:
            side, price = rng.random() < 0.5, rng.randrange(100, 9900, 100)
            cur = book.side(side).get(price, 0)
            d = -rng.randint(1, cur) if cur > 0 and rng.random() < 0.45 else rng.randint(1, 400) * 25
        key = (ts, side, price, d)
        deltas.append((ts, side, price, d, occ[key]))
        occ[key] += 1
        book.apply(side, price, d)
    rest = []
    boundaries = sorted({d[0] for d in deltas})
    for k in range(rest_every, len(boundaries), rest_every):
        instant = boundaries[k]
        receive = instant + rng.randint(0, 100_000)
        rest.append((receive, instant, rebuild(base, [d for d in deltas if d[0] <= instant])))
    return Market(ticker, base, deltas, rest)
