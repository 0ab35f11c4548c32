"""A market's order book: bids only, per side, in integer units (price -> size)."""

from __future__ import annotations

YES, NO = "yes", "no"


class BookError(ValueError):
    """A delta that would make a level negative."""


class Book:
    """Two maps price -> size (ten-thousandths of a dollar -> hundredths of a contract); no-side prices are no-leg."""

    __slots__ = ("no", "yes")

    def __init__(self, yes: dict[int, int] | None = None, no: dict[int, int] | None = None) -> None:
        self.yes: dict[int, int] = yes if yes is not None else {}
        self.no: dict[int, int] = no if no is not None else {}

    def side(self, side: str) -> dict[int, int]:
        """The level map of ``"yes"`` or ``"no"``."""
        return self.yes if side == YES else self.no

    def apply(self, side: str, price: int, size_delta: int) -> int:
        """Apply a signed size change; a level reaching 0 is removed. Returns the new size."""
        levels = self.yes if side == YES else self.no
        new = levels.get(price, 0) + size_delta
        if new < 0:
            raise BookError(f"{side} {price}: size would become {new}")
        if new == 0:
            levels.pop(price, None)
        else:
            levels[price] = new
        return new

    def best(self, side: str) -> tuple[int, int] | None:
        """(price, size) of the best (highest) bid on ``side``, or None when empty."""
        levels = self.yes if side == YES else self.no
        if not levels:
            return None
        price = max(levels)
        return price, levels[price]

    def levels(self, side: str, depth: int = 0) -> list[tuple[int, int]]:
        """Levels ascending by price (best bid last); ``depth`` > 0 keeps only the best ``depth`` levels."""
        levels = sorted((self.yes if side == YES else self.no).items())
        if depth > 0:
            levels = levels[-depth:]
        return levels

    def top(self) -> tuple[int, int, int, int]:
        """(yes_bid, yes_bid_size, yes_ask, yes_ask_size); an empty side shows bid 0 / ask 1.0000."""
        yb = self.best(YES)
        nb = self.best(NO)
        return (
            yb[0] if yb else 0,
            yb[1] if yb else 0,
            10_000 - nb[0] if nb else 10_000,
            nb[1] if nb else 0,
        )

    def copy(self) -> Book:
        """An independent copy."""
        return Book(dict(self.yes), dict(self.no))
