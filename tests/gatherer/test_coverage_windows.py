"""Coverage windows on their own (docs/gatherer.md "Gaps are data"): one window per subscription per gap, a gap inside
an open window that covers it adds nothing, one from earlier (or over markets the row does not name) replaces it
with one row over every untrusted market from the earlier start, and the window closes when its last market
resynced; a global channel's disconnect window closes at its resubscription."""

from __future__ import annotations

from kalshictl.config import WebSocketSettings
from kalshictl.gatherer.connections import ConnectionPool, WsConnection
from kalshictl.gatherer.coverage_windows import CoverageWindows
from kalshictl.gatherer.gaps import GapLog, Window
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.router_state import ConnState, ConnStates
from kalshictl.gatherer.sequence import BookDigest, MarketSync
from kalshictl.gatherer.shards import Shards, Subscription


async def _no_db() -> None:
    raise AssertionError("this gap log is never started")


def _open(gaplog: GapLog) -> list[Window]:
    """The windows still open, as the log holds them."""
    return [w for r in gaplog.open_windows() if (w := gaplog.window(r["window_id"])) is not None]


def _windows() -> tuple[CoverageWindows, GapLog, ConnectionPool, Subscription]:
    metrics = GathererMetrics("t")
    pool = ConnectionPool(WebSocketSettings(), "ws://unused", metrics, on_open=print, on_frame=print, on_close=print)
    gaplog = GapLog("t", _no_db)  # type: ignore[arg-type]
    windows = CoverageWindows(gaplog, MarketSync(), BookDigest())
    shards = Shards(pool.book_conns[:1], cap=10, subs_per_conn=1)
    windows.attach(shards)
    ((sub, _),) = shards.place(["A", "B", "C"]).items()
    return windows, gaplog, pool, sub


def test_a_gap_opens_one_window_over_the_subscription_and_untrusts_its_markets() -> None:
    windows, gaplog, _pool, sub = _windows()
    windows.digest.set("A", 42)
    windows.open(sub, "seq_gap", 1_000, 2_000, sid=7, expected=3, received=5)
    (row,) = _open(gaplog)
    assert (row.tickers, row.from_ts, row.sid, row.reason) == (("A", "B", "C"), 1_000, 7, "seq_gap")
    assert set(windows.sync.awaiting) == {"A", "B", "C"} and windows.digest.get("A") is None
    windows.open(sub, "seq_gap", 1_500, 2_500)  # later, over the markets the row names: nothing new
    assert len(gaplog.open_windows()) == 1
    windows.resynced(sub, ["A", "B"], 3_000)
    assert sub.window is not None
    windows.resynced(sub, ["C"], 4_000)
    assert sub.window is None and gaplog.open_windows() == []


def test_an_earlier_gap_replaces_a_narrower_window_with_one_over_every_untrusted_market() -> None:
    windows, gaplog, _pool, sub = _windows()
    windows.open(sub, "outage", 5_000, 6_000, tickers=["C"])  # a late market's own window
    (outage_id,) = [w["window_id"] for w in gaplog.open_windows()]
    outage = gaplog.window(outage_id)
    windows.open(sub, "seq_gap", 4_000, 7_000)  # earlier, and over markets the outage row does not name
    assert outage is not None and outage.to_ts == 7_000  # closed when replaced
    (row,) = _open(gaplog)
    assert (row.tickers, row.from_ts, row.reason) == (("A", "B", "C"), 4_000, "seq_gap")


def test_record_late_opens_an_outage_only_for_placed_markets_still_untrusted() -> None:
    windows, gaplog, _pool, sub = _windows()
    windows.sync.invalidate("A", 1)
    windows.record_late(["A", "B", "NOT-PLACED"], 9_000)
    (row,) = _open(gaplog)
    assert (row.tickers, row.reason, row.from_ts, row.subscription) == (("A",), "outage", 9_000, sub.name)


def test_a_global_connections_disconnect_opens_a_window_per_channel_until_resubscribed() -> None:
    windows, gaplog, pool, _sub = _windows()
    conn: WsConnection = pool.global_conns[0]
    st = ConnStates()[conn]
    st.channels, st.last_exchange_ts = ("ticker", "trade"), 1_234
    st.channel_sid["ticker"] = 3
    windows.disconnected(conn, st)
    rows = {w.channel: w for w in _open(gaplog)}
    assert set(rows) == {"ticker", "trade"} and rows["ticker"].from_ts == 1_234 and rows["ticker"].sid == 3
    assert rows["ticker"].tickers is None and not st.channel_sid
    windows.channel_resumed(st, "ticker", 5_000)
    assert [w.channel for w in _open(gaplog)] == ["trade"]


def test_an_order_book_disconnect_opens_a_window_per_subscription_from_its_sids_tail() -> None:
    windows, gaplog, pool, sub = _windows()
    conn = pool.book_conns[0]
    st = ConnState(("orderbook_delta",))
    sub.sid = 7
    ss = st.sid_state(7)
    ss.subs.append(sub)
    ss.last_ts, st.last_exchange_ts = 800, 1_000  # the sid's last delta predates the connection's last frame
    windows.disconnected(conn, st)
    (row,) = _open(gaplog)
    assert (row.reason, row.from_ts, row.sid, row.tickers) == ("disconnect", 800, 7, ("A", "B", "C"))
    assert sub.sid is None and not st.sids
