"""WebSocket echo throughput: a direct connection, the proxy's opaque relay, and its parsed path.

A websockets echo server and the proxy each run in a process of their own; this process is
the client. For each message size (1 KiB, 1 MiB) and each path it keeps ``WINDOW`` messages in
flight on one connection and counts echoes for a bounded time and number, then prints
messages/s, MB/s (payload echoed back, one way) and the proxy process's CPU time per echoed
message (both directions; less disturbed by other load on the machine than the rates, and the
Python client is the bottleneck of the small messages' rates). The opaque relay is the proxy with no
plugin; the parsed path is the proxy with a plugin whose ``on_websocket_message`` does
nothing (every message parsed with wsproto, held whole, re-framed). No compression, so the
figures are the framing's. Everything is on 127.0.0.1. Run from the repository root:

    python -m benchmarks.ws_echo
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.procs import cpu_seconds

#: (size, most messages, most seconds) per measurement.
SIZES = [(1024, 50_000, 8.0), (1024 * 1024, 400, 8.0)]
WINDOW = 32


def serve_echo() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None,
                         max_queue=None) as server:
            print(server.sockets[0].getsockname()[1], flush=True)
            await asyncio.Future()

    asyncio.run(main())


class _PassThrough:
    """Makes every WebSocket connection parsed, changes nothing."""

    def on_websocket_message(self, message: Any) -> None:
        pass


def serve_proxy(parsed: bool, certs: str) -> None:
    import anyio

    from nectoproxy import Proxy
    from nectoproxy.testing import proxy_config

    async def main() -> None:
        config = proxy_config(Path(certs), "", {"proxy": {"allow_clients": ["127.0.0.1"]}})
        async with Proxy(config, plugins=[_PassThrough()] if parsed else []) as proxy:
            print(proxy.address[1], flush=True)
            await anyio.sleep_forever()

    try:
        import uvloop  # noqa: F401  (the command line runs on it when installed)
        options: dict[str, Any] = {"use_uvloop": True}
    except ImportError:
        options = {}
    anyio.run(main, backend_options=options)


@contextlib.contextmanager
def child(*args: str) -> Iterator[tuple[int, int]]:
    """A child of this module (``--echo``, ``--proxy``): (its port, its pid)."""
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.ws_echo", *args],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline()), process.pid
    finally:
        process.terminate()
        process.wait(10)


async def measure(port: int, proxy_port: int | None, size: int, most: int, seconds: float
                  ) -> tuple[int, float]:
    from websockets.asyncio.client import connect

    payload = bytes(range(256)) * (size // 256)
    proxy = f"http://127.0.0.1:{proxy_port}" if proxy_port else None
    async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy, max_size=None,
                       compression=None, max_queue=None) as ws:
        for _ in range(3):  # warm up
            await ws.send(payload)
            await ws.recv()
        window = asyncio.Semaphore(WINDOW)
        sent = 0
        started = time.perf_counter()
        deadline = started + seconds

        async def sender() -> None:
            nonlocal sent
            while sent < most and time.perf_counter() < deadline:
                await window.acquire()
                await ws.send(payload)
                sent += 1

        task = asyncio.create_task(sender())
        received = 0
        while True:
            if task.done() and received >= sent:
                break
            await ws.recv()
            received += 1
            window.release()
        await task
        return received, time.perf_counter() - started


def main() -> None:
    if sys.argv[1:2] == ["--echo"]:
        serve_echo()
        return
    if sys.argv[1:2] == ["--proxy"]:
        serve_proxy(sys.argv[2] == "parsed", sys.argv[3])
        return
    rows = []
    with tempfile.TemporaryDirectory() as certs, child("--echo") as (echo, _), \
            child("--proxy", "opaque", certs + "/a") as opaque, \
            child("--proxy", "parsed", certs + "/b") as parsed:
        for size, most, seconds in SIZES:
            for name, proxy in (("direct", None), ("opaque relay", opaque),
                                ("parsed", parsed)):
                cpu = cpu_seconds(proxy[1]) if proxy else 0.0
                count, elapsed = asyncio.run(measure(echo, proxy[0] if proxy else None, size,
                                                     most, seconds))
                cpu = cpu_seconds(proxy[1]) - cpu if proxy else 0.0
                rows.append((size, name, count, elapsed, cpu))
    print(f"WebSocket echo, one connection, {WINDOW} messages in flight, no compression")
    print(f"{'message':>8} {'path':<13} {'messages':>9} {'seconds':>8} {'msg/s':>9} {'MB/s':>8} "
          f"{'proxy CPU us/msg':>17}")
    for size, name, count, elapsed, cpu in rows:
        label = f"{size // 1024} KiB" if size < 1024**2 else f"{size // 1024**2} MiB"
        per_message = f"{cpu / count * 1e6:.0f}" if cpu else "-"
        print(f"{label:>8} {name:<13} {count:>9} {elapsed:>8.2f} {count / elapsed:>9.0f} "
              f"{count * size / elapsed / 1e6:>8.1f} {per_message:>17}")


if __name__ == "__main__":
    main()
