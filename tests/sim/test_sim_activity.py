"""Seeded activity: reproducibility, valid books, identical deltas, ticker uniqueness, rate, scale, thread mode."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter

import orjson
import typer
from typer.testing import CliRunner

from kalshictl.sim import SimConfig, SimExchange
from kalshictl.sim.ground_truth import load
from kalshictl.sim.markets import Universe
from kalshictl.sim.render import market_dict

from .conftest import ANCHOR, config, wait_for

GT_KEYS = {
    "trade": {"kind", "trade_id", "ticker", "exchange_ts", "price", "no_price", "size", "taker_side"},
    "delta": {"kind", "ticker", "exchange_ts", "side", "price", "size_delta", "occurrence"},
    "ticker": {"kind", "ticker", "exchange_ts", "yes_bid", "yes_ask", "last_price", "volume", "open_interest"},
    "lifecycle": {"kind", "ticker", "event_type", "exchange_ts", "channel", "payload", "occurrence"},
}


def test_same_seed_same_markets() -> None:
    a, b, c = Universe(500, 7, ANCHOR), Universe(500, 7, ANCHOR), Universe(500, 8, ANCHOR)
    assert [market_dict(a, i) for i in range(500)] == [market_dict(b, i) for i in range(500)]
    assert [market_dict(a, i) for i in range(500)] != [market_dict(c, i) for i in range(500)]
    assert a.series_names == b.series_names and a.busy == b.busy


def _signature(records: list[dict]) -> list[tuple]:
    out = []
    for r in records:
        if r["kind"] == "delta":
            out.append(("delta", r["ticker"], r["side"], r["price"], r["size_delta"]))
        elif r["kind"] == "trade":
            out.append(("trade", r["trade_id"], r["ticker"], r["price"], r["size"], r["taker_side"]))
        elif r["kind"] == "lifecycle":
            out.append(("lifecycle", r["ticker"], r["event_type"]))
    return out


async def test_same_seed_same_activity(tmp_path) -> None:
    runs = []
    for i in range(2):
        gt = tmp_path / f"gt{i}.jsonl"
        async with SimExchange(config(seed=3, lifecycle_share=0.05, create_share=0.02, ground_truth=gt)) as ex:
            ex.step(3000)
        runs.append(_signature(load(gt)))
    n = min(map(len, runs))  # how many actions step() took depends on same-millisecond ticker suppression
    assert n > 2000 and runs[0][:n] == runs[1][:n]
    assert {s[0] for s in runs[0]} == {"delta", "trade", "lifecycle"}


async def test_books_stay_valid_and_ground_truth_is_well_formed(tmp_path) -> None:
    cfg = config(markets=200, seed=5, duplicate_delta_share=0.05, lifecycle_share=0.03, ground_truth=tmp_path / "gt")
    async with SimExchange(cfg) as ex:
        ex.step(20_000)
        u = ex.universe
        for idx, st in u.states.items():
            tick = u.tick(idx)
            yes, no = st.book.yes, st.book.no
            for levels in (yes, no):
                for price, size in levels.items():
                    assert size > 0 and 0 < price < 10_000 and price % tick == 0
                    assert u.fractional(idx) or size % 100 == 0
            if yes and no:
                assert max(yes) + max(no) < 10_000, "yes and no bids cross"
    records = load(ex.ground_truth_path)
    assert len(records) == ex.gt.records, "stop() flushed everything"
    kinds = Counter(r["kind"] for r in records)
    assert kinds["delta"] > 10_000 and kinds["trade"] > 1000 and kinds["ticker"] > 1000 and kinds["lifecycle"] > 50
    for r in records:
        assert set(r) - {"untimed"} == GT_KEYS[r["kind"]]
    deltas = [r for r in records if r["kind"] == "delta"]
    assert any(r["occurrence"] > 0 for r in deltas), "identical deltas in one millisecond happen"
    # occurrence numbers identical deltas 0, 1, 2 ... in emission order
    seen: Counter = Counter()
    for r in deltas:
        key = (r["ticker"], r["exchange_ts"], r["side"], r["price"], r["size_delta"])
        assert r["occurrence"] == seen[key]
        seen[key] += 1
    assert any(r["price"] % 100 for r in deltas), "sub-cent (deci_cent) prices appear"
    assert any(r["size_delta"] % 100 for r in deltas), "fractional sizes appear"
    assert any(r["size_delta"] % 100 == 0 for r in deltas)
    tickers = Counter((r["ticker"], r["exchange_ts"]) for r in records if r["kind"] == "ticker")
    assert max(tickers.values()) == 1, "at most one ticker message per market per millisecond"
    for r in records:
        if r["kind"] == "trade":
            assert r["price"] + r["no_price"] == 10_000 and r["size"] > 0 and r["taker_side"] in ("yes", "no")
    events = {r["event_type"] for r in records if r["kind"] == "lifecycle"}
    assert {"created", "activated", "deactivated", "close_date_updated", "determined", "settled"} <= events
    assert {"metadata_updated", "event_fee_update", "event_lifecycle"} <= events


async def test_rate_is_respected() -> None:
    async with SimExchange(config(rate=1000, paused=False)) as ex:
        start_count = ex.gt.records
        start = time.monotonic()
        await wait_for(lambda: ex.gt.records >= start_count + 400, timeout=5)
        elapsed = time.monotonic() - start
    assert elapsed > 0.25, f"400 events at 1000/s came too fast ({elapsed:.3f}s)"


def test_scale_425k_markets() -> None:
    start = time.monotonic()
    u = Universe(425_000, 1)
    assert time.monotonic() - start < 5
    assert u.n_markets == 425_000
    for idx in (0, 1, 12_345, 424_999):
        assert u.index_of(u.ticker(idx)) == idx
        market_dict(u, idx)
    assert u.index_of("KXBTC1-E999999-T0") is None and u.index_of("garbage") is None
    assert not u.states, "reads create no per-market state"


def test_thread_mode() -> None:
    handle = SimExchange.start_in_thread(SimConfig(markets=30, seed=2, paused=True))
    ex = handle.ex
    try:
        with urllib.request.urlopen(f"{ex.rest_url}/markets?limit=1000", timeout=5) as r:
            body = orjson.loads(r.read())
        assert len(body["markets"]) == 30 and body["cursor"] == ""
        assert handle.call(ex.step, 100) >= 100
        ticker = body["markets"][0]["ticker"]
        assert handle.call(ex.book, ticker)["ticker"] == ticker
        assert handle.call(ex.stats)["events"]["delta"] > 0
        handle.call(ex.set_faults, "dup=0.1")
        assert handle.call(ex.set_options, ack_seq="last")["ack_seq"] == "last"
        assert ex.ws_url.endswith("/trade-api/ws/v2") and ex.port > 0
        handle.call(ex.flush)
        path = ex.ground_truth_path
        assert path is not None and len(load(path)) == ex.gt.records
    finally:
        handle.stop()
    assert not path.exists(), "the temporary ground truth is removed at stop"


async def test_ground_truth_files(tmp_path) -> None:
    """A temporary ground truth does not outlive the exchange; a given path is kept; none at all is possible."""
    async with SimExchange(config()) as ex:
        temp = ex.ground_truth_path
        assert temp is not None and temp.exists()
    assert not temp.exists()
    async with SimExchange(config(ground_truth=tmp_path / "kept.jsonl")) as ex:
        ex.step(50)
    assert len(load(tmp_path / "kept.jsonl")) == ex.gt.records >= 50
    async with SimExchange(config(record_ground_truth=False)) as ex:
        assert ex.ground_truth_path is None and ex.step(50) >= 50


def test_cli_registers_sim() -> None:
    from kalshictl.cli import sim as sim_cli

    app = typer.Typer()
    app.command("sim")(sim_cli.sim_cmd)

    @app.command("other")
    def _other() -> None:  # a second command keeps typer in multi-command mode
        pass

    result = CliRunner().invoke(app, ["sim", "--help"])
    assert result.exit_code == 0
    for option in ("--markets", "--seed", "--port", "--rate", "--faults", "--ground-truth", "--public-key"):
        assert option in result.output
