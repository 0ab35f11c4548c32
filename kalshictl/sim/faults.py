"""Fault injection: the ``--faults`` spec, its parser and the per-frame / per-request dice.

Spec syntax: comma-separated ``name=value`` items, e.g. ``drop=0.001,skip_seq=0.002,rest_slow=0.01:2.0``.

* ``drop=P``       per outgoing WS data frame: abort that connection (no close frame) instead of sending.
* ``skip_seq=P``   per orderbook delta frame: consume the seq but do not send the frame (a gap).
* ``dup=P``        per WS data frame that carries an identity (seq, trade_id, ticker time): send the frame twice.
  Lifecycle frames are never duplicated: they carry no seq and no time, so a repeated copy is indistinguishable —
  for any client — from Kalshi's genuine identical repeats (docs/sim.md).
* ``malformed=P``  per WS data frame: send a non-JSON garbage text frame before it.
* ``rest_429=P``   per REST request: answer 429 ``{"error": "too many requests"}``.
* ``rest_slow=P[:S]`` per REST request: delay the answer by S seconds (default 1.0).
* ``refuse=P[:S]`` per WS upgrade: start refusing upgrades (HTTP 503) for S seconds (default 5.0).
* ``drop_all=P[:S]`` per outgoing WS data frame of any channel (order books, ticker, trade, lifecycle): an
  exchange-side outage: abort **every** connection and refuse upgrades for S seconds (default 1.0).
* ``cmd_timeout=P`` per ``subscribe`` / ``update_subscription`` command: answer error 18 (command timeout) without
  executing it.
* ``list_dup=P``   per market in a ``GET /markets`` page: name it twice (a cursor-paged listing of markets that
  change while it is read can name one market on two pages: docs/sim.md).

``P`` is a probability in [0, 1]. An empty spec (or ``none``) disables every fault.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

WS_FAULTS = ("drop", "skip_seq", "dup", "malformed", "drop_all")
REST_FAULTS = ("rest_429", "rest_slow", "list_dup")
ALL_FAULTS = (*WS_FAULTS, *REST_FAULTS, "refuse", "cmd_timeout")
_DEFAULT_SECONDS = {"rest_slow": 1.0, "refuse": 5.0, "drop_all": 1.0}

# Outcomes of FaultInjector.roll_frame
NONE, DROP, SKIP, DUP, MALFORMED, DROP_ALL = 0, 1, 2, 3, 4, 5
GARBAGE = b'{"type":"orderbook_delta","sid":\x7f garbage <<not json>>'


@dataclass(frozen=True)
class FaultSpec:
    """Parsed fault spec: probability per fault and durations (seconds) for rest_slow and refuse."""

    probs: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | None) -> FaultSpec:
        """Parse ``name=P[:S],...``; raise ValueError naming the bad item."""
        probs: dict[str, float] = {}
        seconds: dict[str, float] = {}
        text = (spec or "").strip()
        if text.lower() in ("", "none", "off"):
            return cls()
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in ALL_FAULTS:
                raise ValueError(f"fault spec item {item!r}: expected one of {', '.join(ALL_FAULTS)} as name=P")
            prob_s, _, secs_s = value.partition(":")
            try:
                prob = float(prob_s)
                secs = float(secs_s) if secs_s else _DEFAULT_SECONDS.get(name, 0.0)
            except ValueError:
                raise ValueError(f"fault spec item {item!r}: not a number") from None
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"fault spec item {item!r}: probability must be within [0, 1]")
            if secs_s and name not in _DEFAULT_SECONDS:
                raise ValueError(f"fault spec item {item!r}: only {', '.join(_DEFAULT_SECONDS)} take :SECONDS")
            if secs < 0:
                raise ValueError(f"fault spec item {item!r}: seconds must be >= 0")
            probs[name] = prob
            if name in _DEFAULT_SECONDS:
                seconds[name] = secs
        return cls(probs, seconds)

    def __str__(self) -> str:
        parts = []
        for name in ALL_FAULTS:
            if name in self.probs:
                extra = f":{self.seconds[name]:g}" if name in self.seconds else ""
                parts.append(f"{name}={self.probs[name]:g}{extra}")
        return ",".join(parts)


class FaultInjector:
    """Rolls the dice for faults with its own seeded RNG (so faults never perturb the activity stream)."""

    def __init__(self, spec: FaultSpec | str = "", seed: int = 0) -> None:
        self.rng = random.Random(seed * 1_000_003 + 0xFA17)
        self.counts: dict[str, int] = dict.fromkeys(ALL_FAULTS, 0)
        self.refuse_until = 0.0
        self.set(spec)

    def set(self, spec: FaultSpec | str) -> FaultSpec:
        """Replace the active spec (at runtime too)."""
        self.spec = spec if isinstance(spec, FaultSpec) else FaultSpec.parse(spec)
        p = self.spec.probs
        # cumulative thresholds for one roll per WS frame
        self._drop = p.get("drop", 0.0)
        self._skip = self._drop + p.get("skip_seq", 0.0)
        self._dup = self._skip + p.get("dup", 0.0)
        self._mal = self._dup + p.get("malformed", 0.0)
        self._all = self._mal + p.get("drop_all", 0.0)
        self.ws_active = self._all > 0.0
        return self.spec

    def roll_frame(self, skippable: bool, duplicable: bool = True) -> int:
        """Decide the fate of one WS data frame (NONE, DROP, SKIP, DUP, MALFORMED) and count it."""
        r = self.rng.random()
        if r >= self._all:
            return NONE
        if r >= self._mal:
            self.counts["drop_all"] += 1
            self.refuse_now(self.spec.seconds.get("drop_all", 1.0))
            return DROP_ALL
        if r < self._drop:
            self.counts["drop"] += 1
            return DROP
        if r < self._skip:
            if not skippable:
                return NONE
            self.counts["skip_seq"] += 1
            return SKIP
        if r < self._dup:
            if not duplicable:
                return NONE
            self.counts["dup"] += 1
            return DUP
        self.counts["malformed"] += 1
        return MALFORMED

    def roll_rest(self) -> tuple[bool, float]:
        """For one REST request: (answer 429?, seconds to delay)."""
        p = self.spec.probs
        if p.get("rest_429", 0.0) and self.rng.random() < p["rest_429"]:
            self.counts["rest_429"] += 1
            return True, 0.0
        if p.get("rest_slow", 0.0) and self.rng.random() < p["rest_slow"]:
            self.counts["rest_slow"] += 1
            return False, self.spec.seconds.get("rest_slow", 1.0)
        return False, 0.0

    def roll_list_dup(self) -> bool:
        """For one market of a ``GET /markets`` page: name it a second time?"""
        p = self.spec.probs.get("list_dup", 0.0)
        if p and self.rng.random() < p:
            self.counts["list_dup"] += 1
            return True
        return False

    def roll_cmd_timeout(self) -> bool:
        """For one subscribe/update_subscription command: answer error 18 instead?"""
        p = self.spec.probs.get("cmd_timeout", 0.0)
        if p and self.rng.random() < p:
            self.counts["cmd_timeout"] += 1
            return True
        return False

    def refuse_now(self, seconds: float) -> None:
        """Refuse new WS connections for ``seconds`` from now."""
        self.refuse_until = max(self.refuse_until, time.monotonic() + seconds)

    def should_refuse(self) -> bool:
        """For one WS upgrade: refuse it? (inside a refusal window, or the dice start a new one)."""
        now = time.monotonic()
        if now < self.refuse_until:
            self.counts["refuse"] += 1
            return True
        p = self.spec.probs.get("refuse", 0.0)
        if p and self.rng.random() < p:
            self.refuse_until = now + self.spec.seconds.get("refuse", 5.0)
            self.counts["refuse"] += 1
            return True
        return False
