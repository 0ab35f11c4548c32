"""Ticker rows are what they say (migrations/README.md, "Tickers"), through the real gatherer writer and the real
merge: every exchange update of a market in one millisecond is kept (numbered), a REST re-anchor row stands beside an
exchange update of the same time, and production keeps at most one REST row per market per 10 s over all gatherers,
whichever order the gatherers are merged in."""

from __future__ import annotations

import asyncio

import psycopg

from kalshictl.dedup.loops import SyncLoop
from kalshictl.dedup.metrics import DedupMetrics
from kalshictl.gatherer.backfill import ticker_snapshot_row
from kalshictl.gatherer.writers import BatchWriter
from kalshictl.local.verify import TableReport, check_rest_anchors
from kalshictl.schema import REST_ANCHOR_SPACING_US, TICKERS, TickerRow
from tests.dedup.conftest import GDB, DedupEnv, now_us


def ws(ticker: str, ts: int, occurrence: int, yes_bid: int) -> TickerRow:
    return TickerRow(ts, ts + 900, ticker, yes_bid, 5000, 4500, 100, 50, None, None, 10, 20, 1, "ws", occurrence, 7)


def listing(tickers: list[str], received: int) -> list[TickerRow]:
    """The rows of one REST market listing received at ``received`` (as the backfill builds them)."""
    return [
        ticker_snapshot_row({"ticker": t, "yes_bid_dollars": "0.4100", "volume_fp": "3.00"}, received) for t in tickers
    ]


async def write(g: GDB, rows: list[TickerRow]) -> None:
    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(g.cluster.dsn(g.db))

    w = BatchWriter(TICKERS, connect, batch_rows=1000, flush_ms=10)
    w.start()
    for r in rows:
        assert w.add(r)
    assert await w.stop(30)
    assert w.written == len(rows) and w.rejected == 0


async def test_updates_numbered_and_rest_anchors_spaced(dedup_env: DedupEnv) -> None:
    base = (now_us() // 1_000_000 - 120) * 1_000_000
    t_ms = base + 5_000_000  # an exchange millisecond with two updates of KX-M
    lst = base + 1_234_000  # a listing received exactly at an exchange update's time
    s10 = REST_ANCHOR_SPACING_US
    updates = [ws("KX-M", t_ms, 0, 4000), ws("KX-M", t_ms, 1, 4100), ws("KX-M", lst, 0, 3900)]
    g1, g2, g3 = dedup_env.gatherers
    await write(g1, [*updates, *listing(["KX-M", "KX-N"], lst), *listing(["KX-M", "KX-N"], lst + 3_000_000)])
    await write(
        g2, [*updates, *listing(["KX-M", "KX-N"], lst + 2_000_000), *listing(["KX-M", "KX-N"], lst + 13_000_000)]
    )
    await write(g3, listing(["KX-M"], lst + 25_000_000))
    with g1.conn() as c:  # the gatherer keeps everything it received: both updates, and the REST row at lst
        assert c.execute("SELECT count(*) FROM tickers").fetchone()[0] == 7
        assert c.execute(
            "SELECT count(DISTINCT exchange_ts), bool_and(exchange_ts = received_at) FROM tickers WHERE source = 'rest'"
        ).fetchone() == (2, True)

    s = dedup_env.settings()
    metrics = DedupMetrics()
    loops = [SyncLoop(src, TICKERS, s.production, s.sync, metrics, asyncio.Event(), []) for src in s.gatherers]
    try:
        await loops[0].step()
        await asyncio.gather(loops[1].step(), loops[2].step())  # concurrent merges see each other's rows
    finally:
        for loop in loops:
            await loop.close_gatherer()
            await loop.close_production()

    with dedup_env.prod() as c:
        rows = c.execute(
            "SELECT ticker, exchange_ts, source, occurrence, yes_bid FROM tickers ORDER BY source, ticker, exchange_ts,"
            " occurrence"
        ).fetchall()
        rep = TableReport("tickers")
        check_rest_anchors(c, rep)
    rest = [(t, ts - lst) for t, ts, src, _o, _b in rows if src == "rest"]
    ws_rows = [(t, ts, o, b) for t, ts, src, o, b in rows if src == "ws"]
    assert ws_rows == [("KX-M", lst, 0, 3900), ("KX-M", t_ms, 0, 4000), ("KX-M", t_ms, 1, 4100)]
    # g1's listing at lst is first; its own second listing 3 s later and g2's 2 s later are within 10 s of it; g2's
    # at +12 s is 12 s after the stored one; g3's at +25 s likewise
    assert sorted(rest) == sorted(
        [("KX-M", 0), ("KX-N", 0), ("KX-M", 13_000_000), ("KX-N", 13_000_000), ("KX-M", 25_000_000)]
    )
    assert all(b - a >= s10 for (ta, a), (tb, b) in zip(sorted(rest), sorted(rest)[1:], strict=False) if ta == tb)
    assert (rep.duplicated, rep.extra) == (0, 0), rep.examples


def test_verifier_flags_crowded_and_made_up_rest_times(dedup_env: DedupEnv) -> None:
    """The ground-truth check (kalshictl/local/verify.py) catches what the old listing rows were: one row per market
    per gatherer every few seconds, each at ``now + n`` microseconds."""
    t = 1_800_000_000_000_000
    with dedup_env.prod() as c:
        rows = [(t + n, t + n, f"KX-{n}", "g1") for n in range(3)]  # one listing, made-up distinct times
        rows += [(t + 4_000_000, t + 4_000_000, "KX-0", "g2")]  # the same market again 4 s later
        for ts, rx, ticker, g in rows:
            c.execute(
                "INSERT INTO tickers (exchange_ts, received_at, ticker, source, gatherer)"
                " VALUES (%s, %s, %s, 'rest', %s)",
                (ts, rx, ticker, g),
            )
        rep = TableReport("tickers")
        check_rest_anchors(c, rep)
    assert rep.duplicated == 1 and rep.extra == 2, rep.examples
    assert not rep.ok
