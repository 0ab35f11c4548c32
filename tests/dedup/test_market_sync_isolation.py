"""#15 item 4: one malformed market costs only itself; the page lands and the watermark advances."""

from __future__ import annotations

import psycopg

from kalshictl.dedup.market_sync import sync_once
from kalshictl.kalshi.rest import KalshiRest
from tests.dedup.conftest import drop_db, make_db
from tests.hostile_api import hostile_api


def market(ticker: str, **extra) -> dict:
    return {
        "ticker": ticker,
        "event_ticker": "EV-1",
        "status": "active",
        "title": f"market {ticker}",
        "open_time": "2026-01-01T00:00:00Z",
        "close_time": "2026-12-31T00:00:00Z",
        **extra,
    }


PAGES = {
    "/series": {"series": [{"ticker": "SER", "title": "s"}, 7]},
    "/events": {"events": [{"event_ticker": "EV-1", "series_ticker": "SER", "mutually_exclusive": "yes"},
                           {"event_ticker": "EV-2", "series_ticker": "SER", "mutually_exclusive": False}],
                "cursor": ""},
    "/markets": {
        "markets": [
            market("GOOD-1"),
            market("BAD-TIME", open_time="not-a-time"),
            market("NO-ZONE", close_time="2026-12-31T00:00:00"),
            "not an object",
            None,
            market("X" * 5000),
            market("NUL-TITLE", title="a\x00b"),
            market("NUL-NESTED", custom={"x": ["ok", "b\x00"]}),
            {"event_ticker": "EV-1"},
            market("REFUSED"),  # passes validation; the database refuses it (constraint added below)
            market("GOOD-2", title='back\\u0000slash is fine'),
        ],
        "cursor": "",
    },
}  # fmt: skip


async def test_a_bad_row_is_skipped_and_counted_and_the_page_lands(pg_cluster) -> None:
    db = make_db(pg_cluster, "production")
    try:
        with psycopg.connect(pg_cluster.dsn(db), autocommit=True) as c:
            c.execute("ALTER TABLE markets ADD CONSTRAINT no_refused CHECK (ticker <> 'REFUSED')")
        async with hostile_api(PAGES) as url:
            rest = KalshiRest(url, requests_per_second=200)
            pconn = await psycopg.AsyncConnection.connect(pg_cluster.dsn(db), autocommit=True)
            try:
                out = await sync_once(rest, pconn)
                again = await sync_once(rest, pconn)  # the watermark advanced: nothing new is written
            finally:
                await pconn.close()
                await rest.close()
        assert out == {"series": 1, "events": 1, "markets": 2, "rejected": 11}
        assert again["markets"] == 0 and again["rejected"] == 11
        with psycopg.connect(pg_cluster.dsn(db), autocommit=True) as c:
            tickers = [r[0] for r in c.execute("SELECT ticker FROM markets ORDER BY 1")]
            assert tickers == ["GOOD-1", "GOOD-2"]
            marks = dict(c.execute("SELECT table_name, xmin_cursor FROM sync_cursors WHERE gatherer = '_rest'"))
            assert set(marks) == {"series", "events", "markets"} and all(v > 0 for v in marks.values())
    finally:
        drop_db(pg_cluster, db)
