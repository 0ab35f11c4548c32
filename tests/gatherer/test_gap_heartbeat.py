"""The coverage heartbeat never claims a time at which a loss could still be undetected: frames lost with
nothing after them are revealed only by the next frame or a seq probe, so until then the heartbeat stays at the last
frame known complete — a kill -9 in that interval leaves a restart window that covers the loss."""

from __future__ import annotations

import asyncio
import time

from kalshictl.sim import SimConfig, SimExchange
from tests.gatherer.conftest import running_gatherer, until


def _now_us() -> int:
    return time.time_ns() // 1000


async def test_heartbeat_holds_while_frames_may_be_lost_undetected(gatherer_dsn: str, tmp_path) -> None:
    # acks carry the sid's last data seq ("last"), so the gatherer can prove nothing is missing up to each probe; under
    # "own" every probe ack is ambiguous and the floor is held back up to three probe intervals by design
    # (docs/gatherer.md, "Fidelity"), which would hide the hold-and-resume this test is about.
    cfg = SimConfig(markets=30, seed=4, rate=300, paused=True, ground_truth=tmp_path / "gt.jsonl", ack_seq="last")
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex) as g:
        ex.resume()
        await asyncio.sleep(1.5)
        assert g.parts.committed_through_us(_now_us()) > _now_us() - 1_000_000  # busy and complete: ~now
        silent_from = _now_us()
        ex.set_faults("skip_seq=1")  # from now on every order-book delta is lost, and nothing reveals it
        await asyncio.sleep(2.0)
        held = g.parts.committed_through_us(_now_us())
        assert held <= silent_from + 200_000, (held - silent_from) / 1e6
        ex.set_faults("")
        # once frames flow again the gaps are revealed, recorded, and the heartbeat moves on
        await until(lambda: g.parts.committed_through_us(_now_us()) > _now_us() - 1_000_000, 15, "heartbeat")
