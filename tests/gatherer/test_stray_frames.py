"""The overlap rule on its own (docs/gatherer.md "Placement: one market, one subscription"): frames on a sid that
carries none of our subscriptions, frames of a market from a sid it is not placed on, and frames of a market placed
nowhere are dropped and counted, the stray removed once; a market removed lately keeps its last frames from its old
sid."""

from __future__ import annotations

import asyncio

from kalshictl.config import WebSocketSettings
from kalshictl.gatherer.connections import ConnectionPool, WsConnection
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.router_state import Background, ConnStates, RouterStats
from kalshictl.gatherer.shards import Shards
from kalshictl.gatherer.stray_frames import LEFT_SIDS_KEPT, StrayFrames


def _strays(unknown: list[str]) -> tuple[StrayFrames, WsConnection, WsConnection, Shards]:
    metrics = GathererMetrics("t")
    pool = ConnectionPool(WebSocketSettings(), "ws://unused", metrics, on_open=print, on_frame=print, on_close=print)
    strays = StrayFrames(ConnStates(), RouterStats(), metrics, Background(), unknown.append)
    shards = Shards(pool.book_conns[:2], cap=10, subs_per_conn=1)
    strays.attach(shards)
    return strays, pool.book_conns[0], pool.book_conns[1], shards


async def _settle(strays: StrayFrames) -> None:
    await asyncio.gather(*strays.background.tasks)  # the commands (never sent: the sockets are not open)


async def test_a_sid_without_our_subscriptions_is_dropped_and_unsubscribed_once() -> None:
    strays, conn, _other, _shards = _strays([])
    ss = strays.states[conn].sid_state(9)
    assert strays.orphan(conn, ss) and strays.orphan(conn, ss)
    assert strays.stats.orphan_frames == 2 and strays.states[conn].strays_removed == {(9, None)}
    assert len(strays.background.tasks) == 1
    await _settle(strays)


async def test_without_a_placement_nothing_is_an_orphan() -> None:
    strays = StrayFrames(ConnStates(), RouterStats(), GathererMetrics("t"), Background(), None)
    conn = ConnectionPool(
        WebSocketSettings(), "ws://x", GathererMetrics("u"), on_open=print, on_frame=print, on_close=print
    )
    assert not strays.orphan(conn.book_conns[0], strays.states[conn.book_conns[0]].sid_state(1))


async def test_a_market_removed_lately_keeps_its_last_frames_from_its_old_sid_only() -> None:
    unknown: list[str] = []
    strays, conn, other, _shards = _strays(unknown)
    here, elsewhere = strays.states[conn].sid_state(1), strays.states[conn].sid_state(2)
    strays.removed([("GONE", conn, 1)])
    assert not strays.not_left_here(conn, here, "GONE")  # its own last frames in flight
    assert strays.not_left_here(conn, elsewhere, "GONE")  # a copy on another sid: a stray
    assert strays.not_left_here(other, strays.states[other].sid_state(1), "GONE")  # same sid number, other socket
    assert strays.stats.stray_frames == 2 and (2, "GONE") in strays.states[conn].strays_removed
    strays.placed("GONE")  # placed again: judged by its new subscription
    assert strays.not_left_here(conn, here, "GONE") and unknown == ["GONE"]
    await _settle(strays)


async def test_a_stray_heals_the_placements_bookkeeping_and_is_deleted_once() -> None:
    strays, _conn, _other, shards = _strays([])
    shards.place(["M", "N"])  # one on each connection
    home, old = shards.sub_of["M"], shards.sub_of["N"]
    assert home is not old
    ss = strays.states[old.conn].sid_state(5)
    ss.subs.append(old)
    old.tickers.add("M")  # the old subscription still names it (a move in flight)
    shards.load[old.conn] += 1
    load = shards.load[old.conn]
    strays.stray(old.conn, ss, "M")
    strays.stray(old.conn, ss, "M")
    assert "M" not in old.tickers and shards.load[old.conn] == load - 1 and shards.sub_of["M"] is home
    assert strays.stats.stray_frames == 2 and len(strays.background.tasks) == 1
    await _settle(strays)


def test_the_memory_of_removed_markets_is_bounded() -> None:
    strays, conn, _other, _shards = _strays([])
    strays.removed((f"M{i}", conn, 1) for i in range(LEFT_SIDS_KEPT + 5))
    assert (
        len(strays.left_sid) == LEFT_SIDS_KEPT
        and "M0" not in strays.left_sid
        and f"M{LEFT_SIDS_KEPT + 4}" in strays.left_sid
    )
