"""The router: parse each frame, enforce sequence/resync rules, number deltas, hand rows to the table writers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from kalshictl.gatherer.gaps import GapLog, MarketWindows
from kalshictl.gatherer.occurrence import OccurrenceCounter
from kalshictl.gatherer.sequence import DUPLICATE, GAP, OK, MarketSync, OpenGap, SeqTracker
from kalshictl.gatherer.writers import now_us
from kalshictl.kalshi import lifecycle_key
from kalshictl.kalshi import messages as _messages
from kalshictl.kalshi.messages import (
    TERMINAL_ERROR_CODES,
    Ack,
    ErrorMsg,
    Lifecycle,
    OrderbookDelta,
    OrderbookSnapshot,
    ParseError,
    Parser,
    Subscribed,
    TickerUpdate,
    Trade,
)
from kalshictl.units import PRICE_MAX

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import ConnectionManager, WsConnection
    from kalshictl.gatherer.metrics import GathererMetrics
    from kalshictl.gatherer.writers import WriterSet

GAP_CLOCK_SLACK_US = 1_000_000  # exchange vs gatherer clock allowance when a gap's start is a receive time

log = logging.getLogger("kalshictl.gatherer.router")
# the parser's FeeUpdate record (kalshictl.kalshi.messages, parser work in progress): a never-matching type until then
FeeUpdate: type = getattr(_messages, "FeeUpdate", type("NoFeeUpdate", (), {}))


async def _no_database() -> Any:
    raise RuntimeError("this router has no gap database")


LifecycleFn = Callable[[Lifecycle], Awaitable[None]]


def book_row_fields(yes: list[tuple[int, int]], no: list[tuple[int, int]]) -> tuple[str, str, str, str, Any, Any, Any]:
    """JSONB level arrays and best bid/ask/spread of a book given as YES and NO bids (ascending, own-leg prices)."""
    yes_asks = sorted((PRICE_MAX - p, s) for p, s in no)
    no_asks = sorted((PRICE_MAX - p, s) for p, s in yes)
    best_bid = yes[-1][0] if yes else None
    best_ask = PRICE_MAX - no[-1][0] if no else None
    spread = best_ask - best_bid if best_bid is not None and best_ask is not None else None
    dump = orjson.dumps
    return (
        dump(yes).decode(),
        dump(yes_asks).decode(),
        dump(no).decode(),
        dump(no_asks).decode(),
        best_bid,
        best_ask,
        spread,
    )


class _LogLimiter:
    """At most one log line per key per ``every`` seconds (bad input must not flood the log)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}

    def ok(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, 0.0) >= self.every:
            self._last[key] = now
            return True
        return False


class Router:
    """Dispatches parsed records; owns sequence/resync state and occurrence numbering."""

    def __init__(
        self,
        name: str,
        writers: WriterSet,
        metrics: GathererMetrics,
        *,
        use_yes_price: bool = False,
        gaplog: GapLog | None = None,
    ) -> None:
        self.name = name
        self.writers = writers
        self.metrics = metrics
        self.parser = Parser(use_yes_price=use_yes_price)
        self.sync = MarketSync()
        self.occ = OccurrenceCounter()
        self.manager: ConnectionManager | None = None
        self.on_lifecycle: LifecycleFn | None = None
        self._tasks: set[asyncio.Task] = set()
        self._log = _LogLimiter()
        self._msg_counters: dict[str, Any] = {}
        self.snapshot_requested: dict[str, float] = {}
        self.dropped_resync = 0
        self.tail_gaps = 0  # gaps revealed only by a seq probe's ack
        # WS snapshots wait for their anchor: ticker -> [(row fields, conn, last exchange ts at receipt, rx)]
        self._pending_snaps: dict[str, list[tuple[tuple, WsConnection, int, int]]] = {}
        self.parse_errors = 0
        self.duplicates = 0
        self.last_exchange_ts = 0
        self._unknown_seen = 0
        w = writers.by_table
        self._deltas = w["orderbook_deltas"]
        self._snaps = w["orderbook_snapshots"]
        self._trades = w["trades"]
        self._tickers = w["tickers"]
        self._life = w["lifecycle_events"]
        if gaplog is None:  # the service passes its log; a bare router (bench) keeps windows in memory only
            found = w.get("sequence_gaps")
            gaplog = found if isinstance(found, GapLog) else GapLog(name, _no_database, metrics=metrics)
        self.gaplog = gaplog
        self.windows = MarketWindows(gaplog)  # order-book windows: one per subscription event
        self._global_windows: dict[tuple[str, str], int] = {}  # (connection, channel) -> open window
        # per order-book connection: an exchange time up to which its stream is known complete (a lost frame is only
        # revealed by the next one or by a seq probe); the coverage heartbeat never claims a later time
        self._verified: dict[str, int] = {}
        gaplog.coverage_floor = self.verified_through_us

    # ----- helpers --------------------------------------------------------------------------------------------
    def _count(self, mtype: str) -> None:
        c = self._msg_counters.get(mtype)
        if c is None:
            c = self._msg_counters[mtype] = self.metrics.messages.labels(type=mtype)
        c.inc()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a command coroutine in the background (kept referenced until done)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget_market(self, ticker: str) -> None:
        self.sync.forget(ticker)
        self.windows.resynced(ticker, now_us())  # a market that leaves its subscription counts as resynced
        self.occ.forget(ticker)
        self.snapshot_requested.pop(ticker, None)
        for fields, _c, _last, rx in self._pending_snaps.pop(ticker, []):
            self._store_snapshot(fields, rx)

    # ----- entry point ----------------------------------------------------------------------------------------
    def handle(self, conn: WsConnection, raw: str | bytes, rx: int) -> None:
        """Handle one text frame received at ``rx`` (µs); never raises."""
        rec = self.parser.parse(raw)
        t = type(rec)
        try:
            if t is OrderbookDelta:
                self._count("orderbook_delta")
                self._delta(conn, rec, rx)  # type: ignore[arg-type]
            elif t is TickerUpdate:
                self._count("ticker")
                self._seen(conn, rec.exchange_ts)  # type: ignore[union-attr]
                self._ticker(rec, rx)  # type: ignore[arg-type]
            elif t is Trade:
                self._count("trade")
                self._seen(conn, rec.exchange_ts)  # type: ignore[union-attr]
                self._trade(rec, rx)  # type: ignore[arg-type]
            elif t is OrderbookSnapshot:
                self._count("orderbook_snapshot")
                self._snapshot(conn, rec, rx)  # type: ignore[arg-type]
            elif t is Lifecycle:
                self._count(rec.event_type if rec.event_type == "event_lifecycle" else "market_lifecycle_v2")  # type: ignore[union-attr]
                # no _seen(): a lifecycle time is not a message time (absent, or a future close_ts)
                self._lifecycle(rec, rx)  # type: ignore[arg-type]
            elif t is FeeUpdate:  # event_fee_update: stored as a lifecycle row (event_type 'event_fee_update')
                self._count("event_fee_update")
                self._lifecycle(rec, rx)  # type: ignore[arg-type]
            elif t is ParseError:
                self._parse_error(rec)  # type: ignore[arg-type]
            elif t is Subscribed:
                self._count("subscribed")
                self._subscribed(conn, rec, rx)  # type: ignore[arg-type]
            elif t is ErrorMsg:
                self._count("error")
                self._error(conn, rec)  # type: ignore[arg-type]
            elif t is Ack:
                self._count(rec.type)  # type: ignore[union-attr]
                if rec.id is not None:  # type: ignore[union-attr]
                    conn.pending.pop(rec.id, None)  # type: ignore[union-attr]
                if rec.type == "ok" and rec.sid is not None and rec.seq is not None:  # type: ignore[union-attr]
                    self._ack_seq(conn, rec.sid, rec.seq, rx)  # type: ignore[union-attr]
        except Exception:  # a routing bug must not kill the connection's read loop
            log.exception("router: failed to handle a %s", t.__name__)
        n_unknown = sum(self.parser.unknown_fields.values())
        if n_unknown != self._unknown_seen:
            self.metrics.unknown_fields.inc(n_unknown - self._unknown_seen)
            if self._log.ok("unknown"):
                log.warning("unknown message fields seen: %s", dict(self.parser.unknown_fields.most_common(5)))
            self._unknown_seen = n_unknown

    def _seen(self, conn: WsConnection, ts: int) -> None:
        if ts > conn.last_exchange_ts:
            conn.last_exchange_ts = ts
            if ts > self.last_exchange_ts:
                self.last_exchange_ts = ts

    def _parse_error(self, err: ParseError) -> None:
        self.parse_errors += 1
        self.metrics.parse_errors.labels(kind=err.kind).inc()
        if self._log.ok(f"parse:{err.kind}"):
            log.warning("bad frame (%s, type=%s): %s", err.kind, err.msg_type, err.detail)

    # ----- order book -----------------------------------------------------------------------------------------
    def _seq_ok(self, conn: WsConnection, sid: int, seq: int | None, rx: int) -> bool:
        tracker = conn.trackers.get(sid)
        if tracker is None:
            tracker = conn.trackers[sid] = SeqTracker(sid)
        prev = tracker.last
        verdict = tracker.check(seq)
        if verdict is OK:
            conn.last_in_sequence_rx = rx
            # everything this sid sent before this frame has arrived: no loss can hide before the times seen so far
            if conn.last_exchange_ts > self._verified.get(conn.name, 0):
                self._verified[conn.name] = conn.last_exchange_ts
            return True
        if verdict is DUPLICATE:
            self.duplicates += 1
            self.metrics.duplicates.inc()
            return False
        reason = "seq_gap" if verdict is GAP else "seq_backwards"
        self._sequence_broken(conn, sid, reason, None if prev is None else prev + 1, seq, rx)
        return True

    def _ack_seq(self, conn: WsConnection, sid: int, seq: int, rx: int) -> None:
        """An ``ok`` ack carries the sid's last data seq and is ordered after that data on the socket: a higher seq
        than we received means frames were lost with nothing after them to reveal it (a quiet market's last delta)."""
        tracker = conn.trackers.get(sid)
        if tracker is not None and tracker.last is not None and seq == tracker.last:
            # the probe confirms nothing was lost up to (about) now on this subscription
            self._verified[conn.name] = max(self._verified.get(conn.name, 0), rx - GAP_CLOCK_SLACK_US)
        if tracker is None or tracker.last is None or seq <= tracker.last:
            return
        expected = tracker.last + 1
        tracker.last = seq
        self.tail_gaps += 1
        self._sequence_broken(conn, sid, "seq_gap", expected, seq, rx)

    def _sequence_broken(
        self, conn: WsConnection, sid: int, reason: str, expected: int | None, seq: int | None, rx: int
    ) -> None:
        """Every market of the subscription is untrusted until its fresh snapshot arrives."""
        if self._log.ok(f"gap:{conn.name}"):
            log.warning(
                "%s sid %d: %s (expected %s, got %s): re-snapshotting %d markets",
                conn.name,
                sid,
                reason,
                expected,
                seq,
                len(conn.markets),
            )
        # Lost frames were sent after the last frame we received in sequence: the exchange time of the last delta
        # seen, or (no delta yet on this connection) that frame's receive time less a clock slack.
        from_ts = conn.last_exchange_ts or (conn.last_in_sequence_rx or rx) - GAP_CLOCK_SLACK_US
        self._anchor_pending(conn)
        gap = OpenGap(reason, sid, None, from_ts, rx, expected, seq)
        newly = [t for t in conn.markets if self.sync.invalidate(t, gap)]
        self.windows.open(
            newly,
            channel="orderbook_delta",
            reason=reason,
            from_ts=from_ts,
            subscription=f"{conn.name}/{sid}",
            sid=sid,
            expected_seq=expected,
            received_seq=seq,
            detected_at=rx,
        )
        self.request_snapshots(conn, list(conn.markets))

    def request_snapshots(self, conn: WsConnection, tickers: list[str]) -> None:
        """Ask the exchange for fresh snapshots of these markets."""
        if not tickers:
            return
        now = time.monotonic()
        for t in tickers:
            self.snapshot_requested[t] = now
        self.metrics.resnapshots.inc(len(tickers))
        self.spawn(conn.request_snapshots(tickers))

    def _delta(self, conn: WsConnection, d: OrderbookDelta, rx: int) -> None:
        if not self._seq_ok(conn, d.sid, d.seq, rx):
            return
        ts = d.exchange_ts
        if ts > conn.last_exchange_ts:
            conn.last_exchange_ts = ts
            if ts > self.last_exchange_ts:
                self.last_exchange_ts = ts
        pending = self._pending_snaps.pop(d.ticker, None)
        if pending is not None:
            for fields, _conn, _last, _rx in pending:
                self._store_snapshot(fields, ts - 1)  # every delta after the snapshot is at or after ts
        occurrence = self.occ.next(d.ticker, ts, d.side, d.price, d.size_delta)
        if not self.sync.accept_delta(d.ticker, ts):
            self.dropped_resync += 1
            return
        self._deltas.add((ts, rx, d.ticker, d.side, d.price, d.size_delta, occurrence, d.seq, d.sid))

    def _snapshot(self, conn: WsConnection, s: OrderbookSnapshot, rx: int) -> None:
        if not self._seq_ok(conn, s.sid, s.seq, rx):
            return
        cut = max(rx, conn.last_exchange_ts)
        self.sync.on_snapshot(s.ticker, cut)
        self.snapshot_requested.pop(s.ticker, None)
        self.windows.resynced(s.ticker, cut)  # closes its window (a resync, or a late-subscribed market's first)
        fields = (rx, s.ticker, "ws", *book_row_fields(s.yes, s.no), s.sid, s.seq)
        self._pending_snaps.setdefault(s.ticker, []).append((fields, conn, conn.last_exchange_ts, rx))

    # A WebSocket snapshot carries no exchange time. Its exact place in the exchange's history is known from the
    # stream: every later delta of the market comes after it. So the row is held until the market's next delta
    # arrives and stored with exchange_ts = that delta's time - 1 µs (``book`` applies deltas with exchange_ts >
    # anchor). If no delta follows within ``SNAPSHOT_ANCHOR_WAIT_S`` the receive time is a safe anchor (a later delta
    # is generated after it). After a sequence gap the last exchange time seen before the snapshot is used.
    SNAPSHOT_ANCHOR_WAIT_S = 2.0

    def _store_snapshot(self, fields: tuple, anchor: int | None) -> None:
        rx, ticker, source, *rest = fields
        self._snaps.add((rx, anchor, ticker, source, *rest))

    def _anchor_pending(self, conn: WsConnection) -> None:
        for ticker in [t for t, items in self._pending_snaps.items() if any(c is conn for _, c, _, _ in items)]:
            keep = []
            for fields, c, last, rx in self._pending_snaps.pop(ticker):
                if c is conn:
                    self._store_snapshot(fields, min(last, rx) if last else None)
                else:
                    keep.append((fields, c, last, rx))
            if keep:
                self._pending_snaps[ticker] = keep

    def flush_pending_snapshots(self, now: int, *, force: bool = False) -> int:
        """Store snapshots no delta followed within the anchor wait (all of them with ``force``); returns how many."""
        wait_us = int(self.SNAPSHOT_ANCHOR_WAIT_S * 1_000_000)
        stored = 0
        for ticker in list(self._pending_snaps):
            due: list = []
            rest: list = []
            for item in self._pending_snaps[ticker]:
                (due if force or now - item[3] >= wait_us else rest).append(item)
            for fields, _c, _last, rx in due:
                self._store_snapshot(fields, rx)
                stored += 1
            if rest:
                self._pending_snaps[ticker] = rest
            else:
                del self._pending_snaps[ticker]
        return stored

    # ----- global channels ------------------------------------------------------------------------------------
    def _trade(self, t: Trade, rx: int) -> None:
        self._trades.add(
            (t.trade_id, t.exchange_ts, rx, t.ticker, t.price, t.size, t.taker_side, t.is_block_trade, "ws", t.sid)
        )

    def _ticker(self, u: TickerUpdate, rx: int) -> None:
        self._tickers.add(
            (
                u.exchange_ts,
                rx,
                u.ticker,
                u.yes_bid,
                u.yes_ask,
                u.last_price,
                u.volume,
                u.open_interest,
                u.dollar_volume,
                u.dollar_open_interest,
                u.yes_bid_size,
                u.yes_ask_size,
                u.last_trade_size,
                "ws",
                u.sid,
            )
        )

    def _lifecycle(self, ev: Lifecycle, rx: int) -> None:
        ts, dig = lifecycle_key.key_fields(ev.event_type, ev.ticker, ev.payload, ev.exchange_ts, rx)
        self._life.add((ts, rx, ev.ticker, ev.event_type, orjson.dumps(ev.payload).decode(), dig, ev.sid))
        if self.on_lifecycle is not None and ev.event_type not in ("event_lifecycle", "event_fee_update"):
            self.spawn(self.on_lifecycle(ev))

    # ----- control --------------------------------------------------------------------------------------------
    def _subscribed(self, conn: WsConnection, s: Subscribed, rx: int) -> None:
        conn.sids[s.channel] = s.sid
        if s.sid not in conn.trackers:
            conn.trackers[s.sid] = SeqTracker(s.sid)
        if s.id is not None:
            conn.pending.pop(s.id, None)
        conn.global_gaps.pop(s.channel, None)
        wid = self._global_windows.pop((conn.name, s.channel), None)
        if wid is not None:
            self.gaplog.close(wid, rx)

    def _error(self, conn: WsConnection, e: ErrorMsg) -> None:
        purpose, tickers = conn.pending.pop(e.id, ("", [])) if e.id else ("", [])
        if self._log.ok(f"err:{e.code}"):
            log.warning("%s: exchange error %d (%s) for %s", conn.name, e.code, e.message, purpose or "-")
        if e.code in TERMINAL_ERROR_CODES:
            conn.reconnect_now(f"subscription ended by error {e.code}")
            return
        mgr = self.manager
        if e.code == 6:  # already subscribed
            return
        if purpose == "subscribe" and e.code == 16 and e.market_ticker and mgr is not None:
            # one unknown market fails the whole command: drop it, resend the rest
            rest = [t for t in tickers if t != e.market_ticker]
            self.spawn(mgr.remove_markets([e.market_ticker]))
            if rest:
                self.spawn(conn.subscribe_markets(rest))
            return
        if purpose == "subscribe" and e.code == 26 and len(tickers) > 1:
            half = len(tickers) // 2
            self.spawn(conn.subscribe_markets(tickers[:half]))
            self.spawn(conn.subscribe_markets(tickers[half:]))
            return
        if purpose == "get_snapshot":
            if e.code == 11 and e.market_ticker:
                rest = [t for t in tickers if t != e.market_ticker]
                if rest:
                    self.spawn(conn.request_snapshots(rest))
                return  # that market's own (re)subscription delivers its snapshot
            conn.reconnect_now(f"get_snapshot refused (error {e.code})")
            return
        if e.code == 27 and tickers:  # command rate limit: retry later

            async def later() -> None:
                await asyncio.sleep(1.0)
                if purpose == "subscribe":
                    await conn.subscribe_markets(tickers)
                elif purpose == "get_snapshot":
                    await conn.request_snapshots(tickers)

            self.spawn(later())

    def on_disconnect(self, conn: WsConnection, old_sids: dict[str, int]) -> None:
        """A connection dropped: open coverage windows for everything it carried."""
        self._anchor_pending(conn)
        rx = now_us()
        from_ts = conn.last_exchange_ts or (conn.last_in_sequence_rx or rx) - GAP_CLOCK_SLACK_US
        if conn.kind == "orderbook":
            sid = old_sids.get("orderbook_delta")
            newly = [t for t in conn.markets if self.sync.invalidate(t, OpenGap("disconnect", sid, t, from_ts, rx))]
            self.windows.open(
                newly,
                channel="orderbook_delta",
                reason="disconnect",
                from_ts=from_ts,
                subscription=f"{conn.name}/{sid}",
                sid=sid,
                detected_at=rx,
            )
        else:
            for ch in conn.channels:
                if ch not in conn.global_gaps:
                    conn.global_gaps[ch] = OpenGap("disconnect", old_sids.get(ch), None, from_ts, rx)
                    self._global_windows[(conn.name, ch)] = self.gaplog.open(
                        channel=ch,
                        reason="disconnect",
                        from_ts=from_ts,
                        subscription=f"{conn.name}/{ch}",
                        sid=old_sids.get(ch),
                        detected_at=rx,
                    )

    def verified_through_us(self, now: int) -> int:
        """A time before which no loss can still be undetected on a connected order-book subscription (``now``
        when there is none; a disconnected one has its windows recorded already)."""
        out = now
        if self.manager is not None:
            for c in self.manager.book_conns:
                if c.connected and c.markets and c.name in self._verified:
                    out = min(out, self._verified[c.name])
        return out

    def open_gaps(self) -> list[OpenGap]:
        """Markets and channels still untrusted (their windows are already in ``sequence_gaps``, ``to_ts`` NULL)."""
        out = list(self.sync.awaiting.values())
        if self.manager is not None:
            for c in self.manager.connections:
                out.extend(c.global_gaps.values())
        return out

    def retry_stale_snapshots(self, older_than_s: float = 5.0) -> int:
        """Re-request snapshots that have not arrived (lost command, refused, reconnect raced)."""
        if self.manager is None:
            return 0
        now = time.monotonic()
        by_conn: dict[Any, list[str]] = {}
        for t in self.sync.awaiting:
            if now - self.snapshot_requested.get(t, 0.0) < older_than_s:
                continue
            conn = self.manager.shard_of.get(t)
            if conn is not None and conn.connected and "orderbook_delta" in conn.sids:
                by_conn.setdefault(conn, []).append(t)
        for conn, ts in by_conn.items():
            self.request_snapshots(conn, ts)
        return sum(len(v) for v in by_conn.values())
