"""A local WebSocket frame source for benchmarks: replays pre-rendered exchange frames as fast as a client reads.

The local exchange (``kalshictl sim``) renders each event in Python and cannot produce frames faster than the
clients under test read them, so a receive *ceiling* needs a source that costs nearly nothing per frame: this server
does the RFC 6455 handshake, then writes the frames (already framed, unmasked, in 1 MiB chunks) with flow control.

* ``serve(port, frames, repeat)``: every connection gets ``frames`` (``repeat`` times, or forever with ``repeat=0``),
  then a close frame.
* Run as ``python bench/wsframes.py PORT N REPEAT`` (frames from ``bench_parse.frames(N)``); prints ``ready``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked server frame (FIN set)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def chunks(frames: list[bytes], size: int = 1 << 20) -> list[bytes]:
    out: list[bytes] = []
    cur: list[bytes] = []
    n = 0
    for f in frames:
        w = ws_frame(f)
        cur.append(w)
        n += len(w)
        if n >= size:
            out.append(b"".join(cur))
            cur, n = [], 0
    if cur:
        out.append(b"".join(cur))
    return out


async def serve(port: int, frames: list[bytes], repeat: int) -> asyncio.AbstractServer:
    data = chunks(frames)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = b""
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"sec-websocket-key:"):
                    key = line.split(b":", 1)[1].strip()
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            rounds = 0
            while repeat == 0 or rounds < repeat:
                for chunk in data:
                    writer.write(chunk)
                    await writer.drain()
                rounds += 1
            writer.write(ws_frame(struct.pack("!H", 1000), 0x8))
            await writer.drain()
            await reader.read(1 << 16)  # wait for the client's close
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port, backlog=16)


def main() -> None:
    sys.path.insert(0, ".")
    from bench.bench_parse import frames

    port, n, repeat = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

    async def run() -> None:
        server = await serve(port, frames(n), repeat)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())


if __name__ == "__main__":
    main()
