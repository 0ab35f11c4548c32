"""Parser throughput on a realistic frame mix, next to its decode ceilings and baseline from the same run.

* ceilings: bare ``orjson.loads`` and ``msgspec.json.decode`` (untyped) of the same frames;
* ours: :class:`kalshictl.kalshi.messages.Parser` (typed, validated records in exact integer units) and its
  reference path alone (the pure-Python parser every frame the fast path declines goes through);
* baseline: stdlib ``json`` + ``Decimal`` with no validation.

Each figure is the best of a few short rounds (the machine is shared). Exits non-zero only if the run was invalid.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time
from collections.abc import Callable
from decimal import Decimal

import msgspec
import orjson

from kalshictl.kalshi.messages import OrderbookDelta, Parser


def frames(n: int) -> list[bytes]:
    """80 % deltas, 10 % ticker, 10 % trades, in the exchange's current shapes (deltas carry ``ts`` and ``ts_ms``);
    one order-book sid with consecutive seqs, distinct trade ids."""
    rng = random.Random(1)
    out = []
    seq = 0
    for i in range(n):
        r = rng.random()
        if r < 0.8:
            msg = {
                "market_ticker": f"KX-{i % 500}",
                "market_id": "9b0f",
                "price_dollars": f"0.{rng.randint(1, 99):02d}00",
                "delta_fp": f"{rng.randint(-500, 500) or 1}.00",
                "side": rng.choice(["yes", "no"]),
                "ts": "2026-11-22T20:44:01Z",
                "ts_ms": 1795795829474 + i,
            }
            seq += 1
            out.append(json.dumps({"type": "orderbook_delta", "sid": 2, "seq": seq, "msg": msg}).encode())
        elif r < 0.9:
            msg = {
                "market_ticker": f"KX-{i % 500}",
                "price_dollars": "0.4100",
                "yes_bid_dollars": "0.4000",
                "yes_ask_dollars": "0.4200",
                "volume_fp": "1000.00",
                "open_interest_fp": "300.00",
                "dollar_volume": 410,
                "dollar_open_interest": 123,
                "ts_ms": 1795795829474 + i,
                "ts": 1795795829,
            }
            out.append(json.dumps({"type": "ticker", "sid": 3, "msg": msg}).encode())
        else:
            msg = {
                "trade_id": f"5afb8367-8c52-4c23-a7dd-{i:012x}",
                "market_ticker": f"KX-{i % 500}",
                "yes_price_dollars": "0.4100",
                "no_price_dollars": "0.5900",
                "count_fp": "12.00",
                "taker_side": "yes",
                "ts_ms": 1795795829474 + i,
            }
            out.append(json.dumps({"type": "trade", "sid": 4, "msg": msg}).encode())
    return out


def baseline(raw: bytes) -> object:
    f = json.loads(raw)
    m = f["msg"]
    if f["type"] == "orderbook_delta":
        return (
            m["market_ticker"],
            m["side"] == "yes",
            int(Decimal(m["price_dollars"]) * 10000),
            int(Decimal(m["delta_fp"]) * 100),
            m["ts_ms"] * 1000,
        )
    return {k: (Decimal(v) if isinstance(v, str) and k.endswith(("_dollars", "_fp")) else v) for k, v in m.items()}


def rate(fn: Callable[[bytes], object], data: list[bytes], rounds: int = 3) -> float:
    """Best frames/s over ``rounds`` passes."""
    best = 0.0
    gc.collect()
    for _ in range(rounds):
        t0 = time.perf_counter()
        for f in data:
            fn(f)
        best = max(best, len(data) / (time.perf_counter() - t0))
    return best


def main() -> int:
    data = frames(100_000)
    parser = Parser()
    reference = Parser()
    out = [parser.parse(f) for f in data]
    if sum(parser.errors.values()) or not isinstance(out[0], OrderbookDelta) or parser.slow:
        print("invalid run: parse errors or declined frames", parser.errors, parser.slow)
        return 1
    # Interleaved rounds (the machine is shared: load shifts between rounds, not within a pair), median ratio.
    pairs = [(rate(orjson.loads, data, 1), rate(parser.parse, data, 1)) for _ in range(5)]
    ratio = sorted(b / a for a, b in pairs)[2]
    loads = max(a for a, _ in pairs)
    ours = max(b for _, b in pairs)
    ms_decode = rate(msgspec.json.decode, data)
    ref = rate(reference.parse_reference, data)
    base = rate(baseline, data, rounds=1)
    print(f"decode ceilings: orjson.loads {loads:,.0f} frames/s, msgspec.json.decode {ms_decode:,.0f} frames/s")
    print(
        f"parser: {ours:,.0f} msgs/s = x{ratio:.2f} of orjson.loads (median of 5 interleaved rounds; goal >= 0.8),"
        f" x{ours / ms_decode:.2f} of msgspec.json.decode; reference path alone {ref:,.0f} msgs/s"
        f" (x{ref / loads:.2f}); stdlib json+Decimal baseline {base:,.0f} msgs/s (x{ours / base:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
