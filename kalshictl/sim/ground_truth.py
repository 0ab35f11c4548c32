"""The ground-truth log: every exchange event emitted, as JSONL in kalshictl's integer units.

Records (one JSON object per line):

* ``{"kind":"trade","trade_id","ticker","exchange_ts","price" (yes),"no_price","size","taker_side"}``
* ``{"kind":"delta","ticker","exchange_ts","side","price" (as sent: no-leg for "no"),"size_delta","occurrence"}``
  plus ``"untimed": true`` when the frame carried no ``ts_ms``/``ts`` (``delta_ts_ms="sometimes"``)
* ``{"kind":"ticker","ticker","exchange_ts","yes_bid","yes_ask","last_price","volume","open_interest"}``
* ``{"kind":"lifecycle","ticker","event_type","exchange_ts","channel","payload","occurrence"}``

Prices are ten-thousandths of a dollar, sizes hundredths of a contract, ``exchange_ts`` microseconds
(``ts_ms * 1000``). ``occurrence`` numbers identical (ticker, exchange_ts, side, price, size_delta) deltas 0, 1, 2...
in emission order. An event is logged when the exchange emits it, even if a fault kept it from a subscriber.

Lifecycle records: ``ticker`` is the market ticker (the event ticker for ``event_lifecycle`` / ``event_fee_update``,
which are also ``event_type``), ``exchange_ts`` the time the exchange emitted it (Kalshi's message carries no time of
its own, so a recorder can only know it approximately), ``channel`` the WS channel it went to
(``market_lifecycle_v2`` | ``multivariate_market_lifecycle``), ``payload`` the ``msg`` object exactly as sent, and
``occurrence`` numbers records with identical (ticker, event_type, payload) 0, 1, 2... over the run (the exchange
repeats e.g. ``deactivated`` with the same payload). A recorder's row matches the record with the same ticker,
event_type and payload whose ``exchange_ts`` is nearest within a tolerance, one-to-one in time order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson


class GroundTruth:
    """Buffers records in memory and appends them to ``path`` on :meth:`flush` (``path=None``: count only)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._buf: list[bytes] = []
        self._file = open(self.path, "ab") if self.path is not None else None  # noqa: SIM115
        self._occ: dict[tuple[str, str, int, int], int] = {}
        self._occ_ms = -1
        self._life_occ: dict[tuple[str, str, bytes], int] = {}
        self.records = 0

    def _add(self, record: dict) -> None:
        self.records += 1
        if self._file is not None:
            self._buf.append(orjson.dumps(record))

    def trade(self, trade_id: str, ticker: str, ts_ms: int, price: int, no_price: int, size: int, taker: str) -> None:
        """Log a trade (``price`` is the yes price)."""
        self._add(
            {
                "kind": "trade",
                "trade_id": trade_id,
                "ticker": ticker,
                "exchange_ts": ts_ms * 1000,
                "price": price,
                "no_price": no_price,
                "size": size,
                "taker_side": taker,
            }
        )

    def delta(self, ticker: str, ts_ms: int, side: str, price: int, size_delta: int, untimed: bool = False) -> int:
        """Log an order-book delta; returns its occurrence number. ``ts_ms`` must be non-decreasing."""
        if ts_ms != self._occ_ms:
            self._occ.clear()
            self._occ_ms = ts_ms
        key = (ticker, side, price, size_delta)
        occurrence = self._occ.get(key, 0)
        self._occ[key] = occurrence + 1
        record = {
            "kind": "delta",
            "ticker": ticker,
            "exchange_ts": ts_ms * 1000,
            "side": side,
            "price": price,
            "size_delta": size_delta,
            "occurrence": occurrence,
        }
        if untimed:
            record["untimed"] = True
        self._add(record)
        return occurrence

    def ticker(self, ticker: str, ts_ms: int, yes_bid: int, yes_ask: int, last: int, volume: int, oi: int) -> None:
        """Log a ticker update."""
        self._add(
            {
                "kind": "ticker",
                "ticker": ticker,
                "exchange_ts": ts_ms * 1000,
                "yes_bid": yes_bid,
                "yes_ask": yes_ask,
                "last_price": last,
                "volume": volume,
                "open_interest": oi,
            }
        )

    def lifecycle(self, ticker: str, event_type: str, ts_ms: int, channel: str, payload: dict) -> int:
        """Log a lifecycle message (``payload`` = its ``msg`` as sent); returns its occurrence number."""
        key = (ticker, event_type, orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
        occurrence = self._life_occ.get(key, 0)
        self._life_occ[key] = occurrence + 1
        self._add(
            {
                "kind": "lifecycle",
                "ticker": ticker,
                "event_type": event_type,
                "exchange_ts": ts_ms * 1000,
                "channel": channel,
                "payload": payload,
                "occurrence": occurrence,
            }
        )
        return occurrence

    def flush(self) -> int:
        """Append buffered records to the file; returns how many were written."""
        if self._file is None or not self._buf:
            return 0
        buf, self._buf = self._buf, []
        self._file.write(b"\n".join(buf) + b"\n")
        self._file.flush()
        return len(buf)

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


def iter_records(path: str | Path) -> Iterator[dict]:
    """Yield the records of a ground-truth file in emission order."""
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)


def load(path: str | Path) -> list[dict]:
    """All records of a ground-truth file, in emission order."""
    return list(iter_records(path))
