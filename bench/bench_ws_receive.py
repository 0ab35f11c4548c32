"""WebSocket receive ceiling: frames/s a client that only counts frames (and takes each payload as bytes) reads.

Clients: aiohttp (the gatherer's current stack), ``websockets`` (>= 14, asyncio API), ``picows``; each on the stock
asyncio loop and on uvloop. The source is bench/wsframes.py replaying the exchange's frame mix (it costs nearly
nothing per frame, so the client is what is measured). Each client runs in its own process for ``--seconds``.
Prints one line per client and the winner. Exits non-zero only if a run was invalid (no frames received).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ("aiohttp", "websockets", "picows")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def count_aiohttp(url: str, seconds: float) -> tuple[int, float]:
    import aiohttp

    n = 0
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, autoping=False, max_msg_size=64 * 1024 * 1024) as ws:
            t0 = time.perf_counter()
            end = t0 + seconds
            text = aiohttp.WSMsgType.TEXT
            while True:
                msg = await ws.receive()
                if msg.type != text:
                    break
                n += 1
                if n & 1023 == 0 and time.perf_counter() > end:
                    break
            report(n, time.perf_counter() - t0)
    return 0, 0.0


async def count_websockets(url: str, seconds: float) -> tuple[int, float]:
    from websockets.asyncio.client import connect

    n = 0
    async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        t0 = time.perf_counter()
        end = t0 + seconds
        recv = ws.recv
        while True:
            await recv(decode=False)
            n += 1
            if n & 1023 == 0 and time.perf_counter() > end:
                break
        report(n, time.perf_counter() - t0)
    return 0, 0.0


async def count_picows(url: str, seconds: float) -> tuple[int, float]:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    done = asyncio.get_running_loop().create_future()
    state = {"n": 0, "t0": 0.0}

    class Counter(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            state["t0"] = time.perf_counter()
            self.end = state["t0"] + seconds

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                frame.get_payload_as_bytes()
                state["n"] += 1
                if state["n"] & 1023 == 0 and time.perf_counter() > self.end and not done.done():
                    done.set_result(time.perf_counter() - state["t0"])
                    transport.disconnect()
            elif frame.msg_type == WSMsgType.CLOSE and not done.done():
                done.set_result(time.perf_counter() - state["t0"])
                transport.disconnect()

    await ws_connect(Counter, url, max_frame_size=64 * 1024 * 1024)
    elapsed = await done
    report(state["n"], elapsed)
    return 0, 0.0


def report(n: int, elapsed: float) -> None:
    """Print the count and leave at once (a graceful close would wait for a source that never stops)."""
    print(f"{n} {elapsed}", flush=True)
    os._exit(0)


def client_main(name: str, uv: bool, url: str, seconds: float) -> None:
    fn = {"aiohttp": count_aiohttp, "websockets": count_websockets, "picows": count_picows}[name]
    if uv:
        import uvloop

        uvloop.run(fn(url, seconds))
    else:
        asyncio.run(fn(url, seconds))


def measure(name: str, uv: bool, url: str, seconds: float) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--client", name, "--uvloop", str(int(uv)), "--url", url, "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{name} client failed: {out.stderr.strip()[-500:]}")
    n, elapsed = out.stdout.split()
    return int(n) / float(elapsed)


def ceilings(seconds: float = 1.5) -> dict[tuple[str, bool], float]:
    """frames/s per (client, uvloop) against a fresh frame source."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "wsframes.py"), str(port), "20000", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        url = f"ws://127.0.0.1:{port}/trade-api/ws/v2"
        rates = {}
        for name in CLIENTS:
            for uv in (False, True):
                missing = [m for m in (name, "uvloop" if uv else "") if m and importlib.util.find_spec(m) is None]
                if missing:
                    print(f"ws receive ceiling: {name} {'uvloop' if uv else 'asyncio'}: not installed ({missing[0]})")
                    continue
                rates[(name, uv)] = measure(name, uv, url, seconds)
        return rates
    finally:
        server.terminate()
        server.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client")
    ap.add_argument("--uvloop", type=int, default=0)
    ap.add_argument("--url")
    ap.add_argument("--seconds", type=float, default=1.5)
    args = ap.parse_args()
    if args.client:
        client_main(args.client, bool(args.uvloop), args.url, args.seconds)
        return 0
    rates = ceilings(args.seconds)
    if not rates or min(rates.values()) <= 0 or ("aiohttp", False) not in rates:
        print("invalid run: a client received nothing")
        return 1
    base = rates[("aiohttp", False)]
    for (name, uv), r in rates.items():
        loop = "uvloop " if uv else "asyncio"
        print(f"ws receive ceiling: {name:10s} {loop} {r:>10,.0f} frames/s (x{r / base:.2f} of aiohttp/asyncio)")
    best = max(rates, key=rates.__getitem__)
    print(f"ws receive: fastest {best[0]} on {'uvloop' if best[1] else 'asyncio'} at {rates[best]:,.0f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
