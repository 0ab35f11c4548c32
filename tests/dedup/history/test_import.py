"""``kalshictl history import`` against the local exchange's seeded past: the import equals the exchange's ground
truth (trade ids, markets, candles), a rerun adds nothing, SIGKILL + rerun equals an uninterrupted run, and a
malformed row is counted and skipped while the rest of its page lands."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from kalshictl.dedup.history.importer import import_history
from kalshictl.dedup.history.plan import ImportRange
from kalshictl.schema import CANDLESTICKS
from kalshictl.sim.history import HistoryWorld

from .conftest import ANCHOR, DAYS, HistoryEnv

FROM = ANCHOR - DAYS * 86_400
ALL_DAYS = ImportRange(FROM, ANCHOR, periods=(1, 60, 1440))  # the past and the anchor day (late settlements)


def truth_candles(h: HistoryWorld, periods: tuple[int, ...], lo: int, hi: int) -> set[tuple]:
    out = set()
    for ticker in h.markets:
        for p in periods:
            for c in h.candles(ticker, p, lo + 1, hi):
                price = c.price or (None,) * 5
                out.add((ticker, p, c.end_ts * 1_000_000, *c.yes_bid, *c.yes_ask, *price, c.previous, c.volume,
                         c.open_interest))  # fmt: skip
    return out


CANDLE_SQL = (
    "SELECT ticker, period_minutes, end_ts, yes_bid_open, yes_bid_low, yes_bid_high, yes_bid_close, yes_ask_open,"
    " yes_ask_low, yes_ask_high, yes_ask_close, price_open, price_low, price_high, price_close, price_mean,"
    " price_previous, volume, open_interest FROM candlesticks"
)


def snapshot(env: HistoryEnv) -> dict[str, object]:
    return {
        "trades": sorted(env.rows("SELECT trade_id::text, exchange_ts, ticker, price, size, taker_side FROM trades")),
        "candles": sorted(env.rows(CANDLE_SQL)),
        "markets": sorted(env.rows("SELECT ticker, status, result FROM markets")),
    }


def run(env: HistoryEnv, rng: ImportRange = ALL_DAYS, **kw: object) -> dict:
    return asyncio.run(import_history(env.settings(**kw), rng))


def test_import_equals_ground_truth_and_rerun_adds_nothing(history_env: HistoryEnv) -> None:
    env = history_env
    h = env.sim.ex.history
    summary = run(env)
    assert summary["rejected"] == 0 and summary["units_done"] == summary["units_total"] > 0

    trades = env.rows("SELECT trade_id::text, exchange_ts, ticker, price, size, taker_side, source FROM trades")
    truth = {(t.trade_id, t.ts_ms // 1000 * 1_000_000, t.ticker, t.yes_price, t.size, t.taker == "yes", "historical")
             for t in h.all_trades()}  # fmt: skip
    assert len(trades) == len(truth) and set(trades) == truth

    markets = dict(env.rows("SELECT ticker, status FROM markets"))
    assert all(markets.get(t) == "finalized" for t in h.markets)  # archived ones too, through market sync

    candles = set(env.rows(CANDLE_SQL))
    assert candles == truth_candles(h, (1, 60, 1440), ALL_DAYS.lo, ALL_DAYS.hi)
    sources = dict(env.rows("SELECT source, count(*) FROM candlesticks GROUP BY source"))
    assert sources.keys() == {"historical", "live"}

    before = snapshot(env)
    again = run(env)
    assert (again["trades"], again["candles"], again["markets"]) == (0, 0, 0)
    assert again["units_skipped"] == again["units_total"]
    assert snapshot(env) == before


def test_trades_recorded_live_are_not_duplicated(history_env: HistoryEnv) -> None:
    env = history_env
    h = env.sim.ex.history
    first = h.all_trades()[-1]  # after the cutoff: GET /markets/trades, as a gatherer's backfill would see it
    with env.prod() as c:
        c.execute(
            "INSERT INTO trades (trade_id, exchange_ts, received_at, ticker, price, size, taker_side, source, gatherer)"
            " VALUES (%s, %s, 1, %s, %s, %s, %s, 'ws', 'g1')",
            (first.trade_id, first.ts_ms * 1000, first.ticker, first.yes_price, first.size, first.taker == "yes"),
        )
    run(env, ImportRange(FROM, ANCHOR, periods=()))
    rows = env.rows(f"SELECT source, exchange_ts FROM trades WHERE trade_id = '{first.trade_id}'")
    assert rows == [("ws", first.ts_ms * 1000)]
    assert env.rows("SELECT count(*), count(DISTINCT trade_id) FROM trades")[0] == (len(h.all_trades()),) * 2


def test_malformed_row_is_isolated(history_env: HistoryEnv) -> None:
    env = history_env
    h = env.sim.ex.history
    old = [t for t in h.all_trades() if t.ts_ms // 1000 < h.cutoff_ts]
    bad = old[len(old) // 2].trade_id
    env.sim.call(h.malformed.add, bad)
    summary = run(env, ImportRange(FROM, ANCHOR, periods=()))
    assert summary["rejected"] == 1
    stored = {r[0] for r in env.rows("SELECT trade_id::text FROM trades")}
    assert stored == {t.trade_id for t in h.all_trades()} - {bad}
    assert env.rows("SELECT sum(rejected) FROM history_checkpoints")[0][0] == 1


def test_sigkill_and_rerun_equals_an_uninterrupted_run(history_env: HistoryEnv, tmp_path: Path) -> None:
    env = history_env
    cfg = tmp_path / "dedup.yaml"
    cfg.write_text(yaml.safe_dump({"deduplicator": env.config(rps=25.0, workers=2)}))
    day = time.strftime("%Y-%m-%d", time.gmtime(FROM))
    last = time.strftime("%Y-%m-%d", time.gmtime(ANCHOR))
    args = [sys.executable, "-m", "kalshictl", "history", "import", "--config", str(cfg), "--from", day, "--to", last,
            "--candles", "1,60,1440", "--json"]  # fmt: skip
    proc = subprocess.Popen(args, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once some units are done and many are not
            done = env.rows("SELECT count(*) FILTER (WHERE done), count(*) FROM history_checkpoints")[0]
            if done[0] >= 10:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = env.rows("SELECT count(*) FILTER (WHERE done) FROM history_checkpoints")[0][0]
    assert done_at_kill >= 10

    result = subprocess.run(args, env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    resumed = snapshot(env)
    done_after = env.rows("SELECT count(*) FILTER (WHERE done), count(*) FROM history_checkpoints")[0]
    assert done_at_kill < done_after[0] == done_after[1]  # killed halfway; the rerun finished the rest
    assert env.rows("SELECT count(*), count(DISTINCT trade_id) FROM trades")[0][0] == len(resumed["trades"])

    # the same import, uninterrupted, into a fresh production database
    fresh = HistoryEnv(env.sim, env.cluster, _fresh_db(env))
    try:
        run(fresh, ALL_DAYS)
        assert snapshot(fresh) == resumed
    finally:
        from tests.dedup.conftest import drop_db

        drop_db(env.cluster, fresh.db)


def _fresh_db(env: HistoryEnv) -> str:
    from tests.dedup.conftest import make_db

    return make_db(env.cluster, "production")


def test_candlesticks_table_matches_its_schema_entry(history_env: HistoryEnv) -> None:
    cols = history_env.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'candlesticks' ORDER BY ordinal_position"
    )
    assert tuple(c[0] for c in cols) == CANDLESTICKS.names
    key = history_env.rows(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = 'candlesticks'::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)"
    )
    assert tuple(k[0] for k in key) == CANDLESTICKS.key


def test_throttled_import_backs_off_and_still_equals_ground_truth(history_env: HistoryEnv) -> None:
    env = history_env
    h = env.sim.ex.history
    env.sim.call(env.sim.ex.set_faults, "rest_429=0.3")
    summary = run(env, ImportRange(FROM, ANCHOR, periods=(60,)))
    env.sim.call(env.sim.ex.set_faults, "")
    assert summary["throttled"] > 0
    stored = {r[0] for r in env.rows("SELECT trade_id::text FROM trades")}
    assert stored == {t.trade_id for t in h.all_trades()}
    assert set(env.rows(CANDLE_SQL)) == truth_candles(h, (60,), ALL_DAYS.lo, ALL_DAYS.hi)


def test_bad_arguments_exit_2_naming_the_option(tmp_path: Path) -> None:
    cfg = tmp_path / "none.yaml"
    base = [sys.executable, "-m", "kalshictl", "history", "import", "--config", str(cfg)]
    cases = [
        (["--from", "2026-11-02", "--to", "2026-11-01"], "--to"),
        (["--from", "2026-11-01", "--to", "2026-11-01", "--candles", "5"], "--candles"),
        (["--from", "11/01/2026", "--to", "2026-11-01"], "--from"),
        (["--from", "2026-11-01", "--to", "2026-11-01", "--series", "A", "--tickers", "B"], "--series"),
    ]
    for args, option in cases:
        result = subprocess.run(base + args, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and option in result.stderr, (args, result.stderr)


def test_a_day_still_under_way_is_read_again(history_env: HistoryEnv) -> None:
    env = history_env
    midday = float(ANCHOR + 12 * 3600)  # the import runs during the anchor day
    rng = ImportRange(FROM, ANCHOR, periods=(60,))
    first = asyncio.run(import_history(env.settings(), rng, clock=lambda: midday))
    open_days = env.rows("SELECT DISTINCT range_from FROM history_checkpoints WHERE NOT done")
    assert open_days == [(ANCHOR,)]
    second = asyncio.run(import_history(env.settings(), rng, clock=lambda: midday))
    assert 0 < first["units_total"] - second["units_skipped"] < first["units_total"]  # only the open day again
    assert (second["trades"], second["candles"]) == (0, 0)
    third = asyncio.run(import_history(env.settings(), rng, clock=lambda: ANCHOR + 86_400 + 61.0))
    assert env.rows("SELECT count(*) FROM history_checkpoints WHERE NOT done") == [(0,)]
    assert third["trades"] == 0


def test_series_and_tickers_select_their_markets_only(history_env: HistoryEnv) -> None:
    env = history_env
    h = env.sim.ex.history
    archived = next(m for t, m in sorted(h.markets.items()) if m.idx in h.archived_idx and m.trades)
    live = next(m for t, m in sorted(h.markets.items()) if m.idx not in h.archived_idx and m.trades)
    picked = {archived.ticker, live.ticker}
    run(env, ImportRange(FROM, ANCHOR, tickers=tuple(sorted(picked)), periods=(60,)))
    assert {r[0] for r in env.rows("SELECT DISTINCT ticker FROM trades")} == picked
    assert set(env.rows(CANDLE_SQL)) == {c for c in truth_candles(h, (60,), ALL_DAYS.lo, ALL_DAYS.hi) if c[0] in picked}

    series = archived.series
    members = {t for t, m in h.markets.items() if m.series == series}
    run(env, ImportRange(FROM, ANCHOR, series=(series,), periods=(60,)))
    traded = {t.ticker for t in h.all_trades()}
    assert {r[0] for r in env.rows("SELECT DISTINCT ticker FROM trades")} == (members & traded) | picked
    want = {c for c in truth_candles(h, (60,), ALL_DAYS.lo, ALL_DAYS.hi) if c[0] in members | picked}
    assert set(env.rows(CANDLE_SQL)) == want


def test_missing_migration_is_a_clear_error(history_env: HistoryEnv) -> None:
    import pytest

    from kalshictl.errors import KalshiCtlError

    env = history_env
    with env.prod() as c:
        c.execute("DROP TABLE history_checkpoints")
    with pytest.raises(KalshiCtlError, match="migration 020"):
        run(env)
    assert env.rows("SELECT count(*) FROM markets") == [(0,)]  # nothing written before the check
