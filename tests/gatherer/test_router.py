"""The router as a dispatcher over composed parts: its shape (no mixins, no part using state it neither defines
nor receives, no import cycle between the gatherer's modules, annotations included) and its wiring — a loss found
by the detector is recorded through the router (waiting snapshots anchored, one window per subscription, snapshots
requested on the sid), a REST book that disagrees asks for a stream-ordered snapshot, and the collaborators given
to its constructor are called."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import orjson

from kalshictl.gatherer.gaps import GapLog
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.router import Router
from kalshictl.gatherer.sequence import book_digest
from kalshictl.gatherer.shards import Shards
from kalshictl.gatherer.writers import BatchWriter, WriterSet
from kalshictl.kalshi.messages import Lifecycle, OrderbookSnapshot, Parser
from kalshictl.schema import EVENT_TABLES
from tests.gatherer.test_window_cover import T0, _BookConn, _delta, _Pool, _snap, _windows

GATHERER = Path(__file__).resolve().parents[2] / "kalshictl" / "gatherer"


def test_router_has_no_mixin_bases() -> None:
    assert Router.__bases__ == (object,)


def test_no_gatherer_class_uses_self_state_it_neither_defines_nor_receives() -> None:
    """Every ``self.x`` read in a class of kalshictl/gatherer is assigned in that class or defined in its body."""
    unknown = []
    for path in sorted(GATHERER.glob("*.py")):
        for cls in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)):
            defined = {n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            defined |= {
                t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
            }
            defined |= {
                n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            }
            attrs = [n for n in ast.walk(cls) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)]
            selfs = [n for n in attrs if n.value.id == "self"]  # type: ignore[attr-defined]
            defined |= {n.attr for n in selfs if isinstance(n.ctx, ast.Store)}
            unknown += [f"{path.name}:{n.lineno} {cls.name}: self.{n.attr}" for n in selfs if n.attr not in defined]
    assert unknown == []


def test_gatherer_modules_import_each_other_without_a_cycle_annotations_included() -> None:
    deps: dict[str, set[str]] = {}
    for path in GATHERER.glob("*.py"):
        found = (n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom))
        deps[path.stem] = {m.rpartition(".")[2] for m in found if m and m.startswith("kalshictl.gatherer.")}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module not in done:
            for dep in deps.get(module, ()):
                visit(dep, (*path, module))
            done.add(module)

    for module in deps:
        visit(module, ())


async def _no_db() -> None:
    raise AssertionError("nothing is written in this test")


def _router(**collaborators: object) -> tuple[Router, _BookConn, GapLog]:
    writers = WriterSet({s.name: BatchWriter(s, _no_db) for s in EVENT_TABLES})  # type: ignore[arg-type]
    gaplog = GapLog("g", _no_db)  # type: ignore[arg-type]
    router = Router("g", writers, GathererMetrics("g"), gaplog, **collaborators)  # type: ignore[arg-type]
    conn = _BookConn()
    router.attach(_Pool(global_conns=[], book_conns=[conn]), Shards([conn], cap=10, subs_per_conn=1))  # type: ignore[list-item]
    return router, conn, gaplog


async def _subscribed(router: Router, conn: _BookConn, markets: list[str]) -> None:
    """Place markets, acknowledge their subscribe on sid 1 and deliver their snapshots (seq 1, 2, …)."""
    router.add_markets(markets)
    await asyncio.sleep(0)
    (sub_id,) = [i for i, cmd in conn.pending.items() if getattr(cmd, "kind", None) == "subscribe"]
    msg = {"channel": "orderbook_delta", "sid": 1}
    router.handle(conn, orjson.dumps({"type": "subscribed", "id": sub_id, "msg": msg}), T0)
    for i, t in enumerate(markets):
        router.handle(conn, _snap(t, i + 1), T0 + 1000)


async def test_a_gap_is_recorded_through_the_router() -> None:
    router, conn, gaplog = _router()
    await _subscribed(router, conn, ["A", "B"])
    router.handle(conn, _delta("A", 3, T0 + 10_000), T0 + 11_000)  # anchors A's snapshot; B's still waits
    snaps = router.writers["orderbook_snapshots"]._buf
    assert [(row[1], row[2]) for row in snaps] == [(T0 + 10_000 - 1, "A")]
    router.handle(conn, _delta("B", 5, T0 + 20_000), T0 + 21_000)  # seq 4 lost
    # stored at once, anchored at the last exchange time seen before it arrived (none here: no anchor)
    assert [(row[1], row[2]) for row in snaps][1:] == [(None, "B")]
    (w,) = _windows(gaplog)
    assert (w.reason, w.tickers, w.from_ts, w.expected_seq, w.received_seq) == (
        "seq_gap",
        ("A", "B"),
        T0 + 10_000,
        4,
        5,
    )
    await asyncio.sleep(0)
    asks = [p for cmd, p in conn.sent if p.get("action") == "get_snapshot"]
    assert asks == [{"sids": [1], "action": "get_snapshot", "market_tickers": ["A", "B"]}]
    assert set(router.sync.awaiting) == {"A", "B"}
    for t in router.background.tasks:
        t.cancel()


async def test_a_rest_book_that_disagrees_with_a_quiet_market_asks_for_a_snapshot() -> None:
    router, conn, _gaplog = _router()
    await _subscribed(router, conn, ["A"])
    snap = Parser().parse(_snap("A", 1))
    assert isinstance(snap, OrderbookSnapshot)
    held, other = snap.yes, [(price, size + 1) for price, size in snap.yes]
    assert router.book.digest.get("A") == book_digest(held, [])
    router.verify_book("A", held, [], T0 + 10_000_000)  # agrees: nothing asked
    router.verify_book("A", other, [], T0 + 1_500_000)  # frames may be in flight: not judged
    await asyncio.sleep(0)
    assert not [p for _c, p in conn.sent if p.get("action") == "get_snapshot"]
    router.verify_book("A", other, [], T0 + 10_000_000)
    await asyncio.sleep(0)
    assert [p["market_tickers"] for _c, p in conn.sent if p.get("action") == "get_snapshot"] == [["A"]]
    assert router.stats.rest_suspects == 1
    for t in router.background.tasks:
        t.cancel()


async def test_collaborators_given_to_the_constructor_are_called() -> None:
    placed_nowhere: list[str] = []
    unknown_markets: list[str] = []
    lifecycles: list[Lifecycle] = []

    async def on_lifecycle(ev: Lifecycle) -> None:
        lifecycles.append(ev)

    router, conn, _gaplog = _router(
        on_lifecycle=on_lifecycle, on_unknown_market=unknown_markets.append, on_unknown_frame=placed_nowhere.append
    )
    await _subscribed(router, conn, ["A"])
    frame = {"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": {"market_ticker": "Z", "price_dollars": "0.4000",
             "delta_fp": "1.00", "side": "yes", "ts_ms": 1}}  # fmt: skip
    router.handle(conn, orjson.dumps(frame), T0 + 2_000)
    assert placed_nowhere == ["Z"] and router.stats.stray_frames == 1
    msg = {"market_ticker": "NEW", "event_type": "created"}
    router.handle(conn, orjson.dumps({"type": "market_lifecycle_v2", "sid": 3, "msg": msg}), T0 + 3_000)
    router.add_markets(["B"])
    await asyncio.sleep(0)
    (add_id,) = [i for i, cmd in conn.pending.items() if getattr(cmd, "kind", None) == "add"]
    error = {"type": "error", "id": add_id, "msg": {"code": 16, "msg": "market not found", "market_ticker": "B"}}
    router.handle(conn, orjson.dumps(error), T0 + 4_000)
    await asyncio.sleep(0)
    assert [ev.ticker for ev in lifecycles] == ["NEW"] and unknown_markets == ["B"]
    for t in router.background.tasks:
        t.cancel()
