"""book show / book verify / coverage end to end: production rows, the CLI as the read-only exporter role."""

from __future__ import annotations

import json
import subprocess
import sys

from kalshictl.research.book import diff
from tests.research.conftest import insert_deltas, insert_snapshot
from tests.research.synth import T0, simulate


def _cli(*args: str, code: int = 0) -> dict:
    proc = subprocess.run([sys.executable, "-m", "kalshictl", *args, "--json"], capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    return json.loads(proc.stdout)


def _seed(prod, m):
    with prod.connect() as conn:
        insert_snapshot(conn, m.ticker, T0 - 1000, m.base.yes, m.base.no, source="ws", gatherer="g2")
        insert_deltas(conn, [(m.ticker, *d) for d in m.deltas])
        for recv, _inst, book in m.rest:
            insert_snapshot(conn, m.ticker, recv, book.yes, book.no, source="rest", gatherer="g1")


def test_book_show_and_verify(prod):
    m = simulate(seed=5, n=1500)
    _seed(prod, m)
    cfg = str(prod.config)
    # `book TICKER` == `book show TICKER`; ISO and epoch-ms times; the nearest snapshot may be a REST one
    at = m.deltas[700][0]
    out = _cli("book", m.ticker, "--at", str(at // 1000), "--depth", "0", "--config", cfg)
    truth = m.book_at(at)
    assert out["yes_bids"] == [list(x) for x in truth.bids(True)]
    assert out["no_bids"] == [list(x) for x in truth.bids(False)]
    assert out["yes_asks"] == [[10_000 - p, s] for p, s in sorted(truth.no.items(), reverse=True)]
    assert out["best_yes_bid"] == truth.best_bid(True)[0] and out["best_yes_ask"] == truth.best_ask(True)[0]
    assert out["spread"] == out["best_yes_ask"] - out["best_yes_bid"]
    before_first = _cli("book", "show", m.ticker, "--at", "2027-01-15T07:59:59.9995", "--config", cfg, code=0)
    assert before_first["base"]["source"] == "ws" and before_first["deltas_applied"] == 0
    top = _cli("book", m.ticker, "--at", str(at), "--depth", "2", "--config", cfg)
    assert len(top["yes_bids"]) == 2 and top["yes_bids"] == out["yes_bids"][-2:]

    text = subprocess.run(
        [sys.executable, "-m", "kalshictl", "book", m.ticker, "--at", str(at), "--depth", "3", "--config", cfg],
        capture_output=True,
        text=True,
    )
    assert text.returncode == 0 and "best YES bid" in text.stdout and "NO view" in text.stdout, text.stderr

    end = m.deltas[-1][0]
    clean = _cli("book", "verify", m.ticker, "--from", str(T0), "--to", str(end), "--config", cfg)
    assert clean["ok"] and clean["checked"] == len(m.rest) > 5 and clean["matched"] == clean["checked"]
    assert clean["base"]["source"] == "ws"

    # inject a gap into the copy: delete the deltas between two REST snapshots' exchange instants
    (recv2, inst2, _), (recv3, inst3, _) = m.rest[2], m.rest[3]
    with prod.connect() as conn:
        gone = conn.execute(
            "DELETE FROM orderbook_deltas WHERE ticker = %s AND exchange_ts > %s AND exchange_ts < %s RETURNING 1",
            (m.ticker, inst2 + 20_000, inst3 - 20_000),
        ).fetchall()
    assert gone
    bad = _cli("book", "verify", m.ticker, "--from", str(T0), "--to", str(end), "--config", cfg, code=1)
    assert not bad["ok"] and len(bad["mismatches"]) == 1
    mm = bad["mismatches"][0]
    assert (mm["window_from"], mm["window_to"]) == (recv2, recv3)
    assert mm["diffs"] and all(set(d) == {"side", "price", "expected", "rebuilt"} for d in mm["diffs"])
    assert mm["recorded"] is False and mm["recorded_gaps"] == []  # nobody recorded this loss
    with prod.connect() as conn:  # a gatherer's window over this market (among others) explains it
        conn.execute(
            "INSERT INTO sequence_gaps (gatherer, instance_id, window_id, channel, tickers, reason, from_ts, to_ts,"
            " detected_at) VALUES ('g1', 'i9', 1, 'orderbook_delta', %s, 'seq_gap', %s, %s, %s)",
            (["OTHER", m.ticker], inst2, inst3, inst2),
        )
    mm = _cli("book", "verify", m.ticker, "--from", str(T0), "--to", str(end), "--config", cfg, code=1)["mismatches"][0]
    assert mm["recorded"] and [(g["gatherer"], g["reason"]) for g in mm["recorded_gaps"]] == [("g1", "seq_gap")]
    assert bad["matched"] == bad["checked"] - 1
    window = ("--from", str(T0), "--to", str(end))
    human = subprocess.run(
        [sys.executable, "-m", "kalshictl", "book", "verify", m.ticker, *window, "--config", cfg],
        capture_output=True,
        text=True,
    )
    assert human.returncode == 1 and "1 mismatched" in human.stdout and "disagree" in human.stderr
    # the rebuilt book after the gap differs from the truth exactly on the levels verify reported
    rebuilt = _cli("book", m.ticker, "--at", str(inst3), "--depth", "0", "--config", cfg)
    truth3 = m.book_at(inst3)
    from kalshictl.research.book import Book

    differing = {(d.side, d.price) for d in diff(truth3, Book.from_levels(rebuilt["yes_bids"], rebuilt["no_bids"]))}
    assert differing and differing >= {(d["side"], d["price"]) for d in mm["diffs"]}


def test_book_unknown_ticker_is_clear(prod):
    proc = subprocess.run(
        [sys.executable, "-m", "kalshictl", "book", "NOPE", "--at", "now", "--config", str(prod.config)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "no order-book snapshot of NOPE" in proc.stderr


def test_coverage_gatherer_and_production_gaps(prod):
    s = 1_800_000_000_000_000
    sec = 1_000_000
    rows = [
        # gatherer, gap_id, sid, ticker, reason, from, to
        ("g1", 1, 3, "A", "seq_gap", s + 10 * sec, s + 20 * sec),  # A: g1 and g2 overlap 15..18 -> production gap
        ("g2", 1, 7, "A", "resnapshot", s + 15 * sec, s + 18 * sec),
        ("g1", 2, 3, "B", "seq_gap", s + 30 * sec, s + 40 * sec),  # B: only g1 -> gatherer gap only
        ("g2", 2, 9, None, "disconnect", s + 50 * sec, s + 60 * sec),  # g2 connection-level, covers every ticker
        ("g1", 3, 4, "C", "seq_gap", s + 55 * sec, s + 70 * sec),  # C: overlaps g2's disconnect 55..60
        ("g3", 1, 1, "A", "seq_gap", s + 5 * sec, None),  # g3 open gap on A from 5 s
    ]
    with prod.connect() as conn:
        for g, gid, sid, t, reason, f, e in rows:
            conn.execute(
                "INSERT INTO sequence_gaps (gatherer, instance_id, window_id, channel, sid, tickers, reason, from_ts,"
                " to_ts, detected_at) VALUES (%s,'i1',%s,'orderbook_delta',%s,%s,%s,%s,%s,%s)",
                (g, gid, sid, None if t is None else [t], reason, f, e, f),
            )
        # the deduplicator's market sync keeps a cursor under the reserved name "_rest": not a gatherer
        conn.execute("INSERT INTO sync_cursors (gatherer, table_name) VALUES ('_rest', 'markets')")
    cfg = str(prod.config)
    two = _cli(
        "coverage", "--from", str(s), "--to", str(s + 100 * sec), "--gatherers", "g1,g2", "--config", cfg, code=1
    )
    assert {g["gatherer"]: g["gaps"] for g in two["gatherers"]} == {"g1": 3, "g2": 2}
    prod_gaps = {(p["ticker"], p["from_ts"], p["to_ts"]) for p in two["production_gaps"]}
    assert prod_gaps == {("A", s + 15 * sec, s + 18 * sec), ("C", s + 55 * sec, s + 60 * sec)}
    # default gatherer set: everyone in sequence_gaps (g1, g2, g3); g3's open gap on A lasts to the window end
    three = _cli("coverage", "--from", str(s), "--to", str(s + 100 * sec), "--config", cfg, code=1)
    assert [g["gatherer"] for g in three["gatherers"]] == ["g1", "g2", "g3"]
    assert {(p["ticker"], p["from_ts"], p["to_ts"]) for p in three["production_gaps"]} == {
        ("A", s + 15 * sec, s + 18 * sec)
    }
    assert any(g["open"] and g["to_ts"] == s + 100 * sec for g in three["gaps"])
    # a window with no common gap: exit 0
    quiet = _cli("coverage", "--from", str(s + 30 * sec), "--to", str(s + 45 * sec), "--config", cfg, code=0)
    assert quiet["production_gap_free"] and len(quiet["gaps"]) == 2  # g1's B and g3's open A
