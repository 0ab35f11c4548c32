"""Parser throughput: kalshictl.kalshi.messages vs a stdlib-json + Decimal baseline, same frames, same run."""

from __future__ import annotations

import json
import random
import sys
import time
from decimal import Decimal

from kalshictl.kalshi.messages import OrderbookDelta, Parser


def frames(n: int) -> list[bytes]:
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
                "trade_id": "5afb8367-8c52-4c23-a7dd-48cfbaa65d5a",
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


def main() -> int:
    data = frames(200_000)
    parser = Parser()
    t0 = time.perf_counter()
    out = [parser.parse(f) for f in data]
    ours = len(data) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for f in data:
        baseline(f)
    base = len(data) / (time.perf_counter() - t0)
    if sum(parser.errors.values()) or not isinstance(out[0], OrderbookDelta | object):
        print("invalid run: parse errors", parser.errors)
        return 1
    print(f"parser: {ours:,.0f} msgs/s vs stdlib json+Decimal baseline {base:,.0f} msgs/s (x{ours / base:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
