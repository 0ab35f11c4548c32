"""Kalshi's REST token-bucket rate limiter (read tiers; 10 tokens per request)."""

from __future__ import annotations

import time

REQUEST_COST = 10
# read tokens per second per tier (docs/sim.md, "REST")
TIERS: dict[str, float] = {
    "basic": 200,
    "advanced": 300,
    "expert": 600,
    "premier": 1000,
    "paragon": 2000,
    "prime": 4000,
    "prestige": 10000,
}
TIER_NAMES = (*TIERS, "unlimited")


class TokenBucket:
    """Refills ``rate`` tokens/s up to ``capacity``; :meth:`take` spends ``cost`` tokens or refuses."""

    __slots__ = ("capacity", "last", "rate", "tokens")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.last = time.monotonic()

    def take(self, cost: float = REQUEST_COST) -> bool:
        """Spend ``cost`` tokens if available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class RateLimiter:
    """One bucket per client (API key id, or remote address for anonymous clients)."""

    def __init__(self, tier: str = "unlimited") -> None:
        tier = tier.lower()
        if tier not in TIER_NAMES:
            raise ValueError(f"unknown rest tier {tier!r}; expected one of {', '.join(TIER_NAMES)}")
        self.tier = tier
        self.rate = TIERS.get(tier, 0.0)
        # capacity: 2 s of budget for basic/advanced reads, otherwise 1 s
        self.capacity = self.rate * (2 if tier in ("basic", "advanced") else 1)
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, client: str) -> bool:
        """True if ``client`` may make one more request now."""
        if self.tier == "unlimited":
            return True
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate, self.capacity)
        return bucket.take()
