"""A small HTTP/1.1 load generator that can go through a proxy, CONNECT + TLS included.

wrk cannot send CONNECT, so the HTTPS-through-the-proxy scenarios need this. It runs on
uvloop when installed, parses responses in ``data_received`` callbacks (no task switch per
request) and sends pre-built request bytes, so one core drives several thousand TLS requests
per second. Every run is bounded by ``--duration`` and ``--max-requests``.

Modes (all print one JSON object on the last line of stdout)::

    keepalive   N connections, each sending the next request as soon as a response ends
    newconn     N workers, each opening a new connection (and TLS handshake) per request
    download    sequential downloads of --path, counting bytes
    firsthost   sequential new connections, each with a new SNI name (hN-TAG.bench.test)
    idle        open N connections, one request each, print READY, hold until stdin closes

``keepalive`` prints ``START`` when the measured interval begins (after --warmup) and ``END``
when it ends, so a caller can sample the proxy's CPU time over exactly that interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from httpclient import ClientProtocol, Target, open_connection

MAX_LATENCY_SAMPLES = 2_000_000


@dataclass
class Stats:
    requests: int = 0
    errors: int = 0
    body_bytes: int = 0
    latencies: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)
    measuring: bool = True

    def error(self, kind: str) -> None:
        if self.measuring:
            self.errors += 1
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def done(self, status: int, latency: float, body: int) -> None:
        if not self.measuring:
            return
        if status >= 400 or status < 200:
            self.error(f"status {status}")
        self.requests += 1
        self.body_bytes += body
        if len(self.latencies) < MAX_LATENCY_SAMPLES:
            self.latencies.append(latency)

    def report(self, mode: str, seconds: float, **extra: Any) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3) if lat else None

        return {
            "mode": mode, "requests": self.requests, "errors": self.errors,
            "error_kinds": self.error_kinds, "seconds": round(seconds, 3),
            "rps": round(self.requests / seconds, 1) if seconds > 0 else 0.0,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "median_ms": round(statistics.median(lat) * 1000, 3) if lat else None,
            "body_bytes": self.body_bytes,
            "mb_per_s": round(self.body_bytes / seconds / 1e6, 1) if seconds > 0 else 0.0,
            **extra,
        }


def request_bytes(target: Target, path: str, close: bool = False) -> bytes:
    authority = f"{target.sni or target.host}:{target.port}"
    line_target = path
    if target.proxy_port and not target.tls:
        line_target = f"http://{target.host}:{target.port}{path}"  # absolute form
    extra = "Connection: close\r\n" if close else ""
    return (f"GET {line_target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: nectobench\r\n"
            f"Accept: */*\r\n{extra}\r\n").encode("ascii")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -- keep-alive --------------------------------------------------------------------------------


class KeepAlive(ClientProtocol):
    """Sends the next request from inside the callback that completed the previous one."""

    def __init__(self, run: KeepAliveRun) -> None:
        super().__init__()
        self.run = run
        self.sent_at = 0.0

    def send_next(self) -> None:
        run = self.run
        if run.stopping or run.sent >= run.max_requests:
            self.finish()
            return
        run.sent += 1
        self.sent_at = time.perf_counter()
        self.expect_response()
        self.transport.write(run.request)

    def response_complete(self, status: int, body: int, closing: bool) -> None:
        self.run.stats.done(status, time.perf_counter() - self.sent_at, body)
        if closing:
            self.finish()
        else:
            self.send_next()


@dataclass
class KeepAliveRun:
    target: Target
    request: bytes
    stats: Stats
    max_requests: int
    stopping: bool = False
    sent: int = 0


async def keepalive_worker(run: KeepAliveRun, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while not run.stopping and run.sent < run.max_requests and loop.time() < deadline:
        try:
            protocol = await open_connection(run.target, lambda: KeepAlive(run))
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            run.stats.error(f"connect: {type(exc).__name__}")
            await asyncio.sleep(0.05)
            continue
        protocol.send_next()
        reason = await protocol.finished
        if reason is not None and not run.stopping:
            run.stats.error(reason)


async def keepalive(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stats = Stats(measuring=args.warmup <= 0)
    run = KeepAliveRun(target, request_bytes(target, args.path), stats, args.max_requests)
    deadline = loop.time() + args.warmup + args.duration
    tasks = [asyncio.ensure_future(keepalive_worker(run, deadline))
             for _ in range(args.connections)]
    if args.warmup > 0:
        await asyncio.sleep(args.warmup)
        stats.measuring = True
    say("START")
    started = time.perf_counter()
    await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
    run.stopping = True
    seconds = time.perf_counter() - started
    stats.measuring = False
    say("END")
    pending = [t for t in tasks if not t.done()]
    _, still = await asyncio.wait(pending, timeout=5) if pending else (set(), set())
    for task in still:
        task.cancel()
    stalled = len(still)
    stats.measuring = True
    for _ in range(stalled):
        stats.error("stalled at the end of the run (no response for 5 s)")
    return stats.report("keepalive", seconds, connections=args.connections)


# -- one request per connection ----------------------------------------------------------------


async def one_request(target: Target, request: bytes, stats: Stats,
                      timeout: float) -> None:
    started = time.perf_counter()
    try:
        protocol = await asyncio.wait_for(open_connection(target, ClientProtocol), timeout)
    except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
        stats.error(f"connect: {type(exc).__name__}: {exc}"[:120])
        return
    try:
        protocol.expect_response()
        protocol.transport.write(request)
        status, body = await asyncio.wait_for(protocol.response, timeout)
        stats.done(status, time.perf_counter() - started, body)
    except (TimeoutError, ConnectionError) as exc:
        stats.error(f"response: {type(exc).__name__}: {exc}"[:120])
    finally:
        protocol.transport.close()


async def newconn(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    stats = Stats()
    request = request_bytes(target, args.path, close=True)
    deadline = time.perf_counter() + args.duration
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while time.perf_counter() < deadline and sent < args.max_requests:
            sent += 1
            await one_request(target, request, stats, args.timeout)

    say("START")
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.connections)))
    seconds = time.perf_counter() - started
    say("END")
    return stats.report("newconn", seconds, connections=args.connections)


async def firsthost(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    stats = Stats()
    deadline = time.perf_counter() + args.duration
    say("START")
    started = time.perf_counter()
    for i in range(args.max_requests):
        if time.perf_counter() >= deadline:
            break
        fresh = Target(**{**target.__dict__, "sni": f"h{i}-{args.tag}.bench.test"})
        await one_request(fresh, request_bytes(fresh, args.path, close=True), stats, args.timeout)
    seconds = time.perf_counter() - started
    say("END")
    return stats.report("firsthost", seconds)


async def download(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    stats = Stats()
    deadline = time.perf_counter() + args.duration
    say("START")
    busy = 0.0
    for _ in range(args.max_requests):
        if time.perf_counter() >= deadline:
            break
        started = time.perf_counter()
        await one_request(target, request_bytes(target, args.path, close=True), stats,
                          args.timeout)
        busy += time.perf_counter() - started
    say("END")
    return stats.report("download", busy)


async def idle(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    stats = Stats()
    request = request_bytes(target, args.path)
    gate = asyncio.Semaphore(50)
    protocols: list[ClientProtocol] = []

    async def open_one() -> None:
        async with gate:
            started = time.perf_counter()
            try:
                protocol = await asyncio.wait_for(open_connection(target, ClientProtocol),
                                                  args.timeout)
                protocol.expect_response()
                protocol.transport.write(request)
                status, body = await asyncio.wait_for(protocol.response, args.timeout)
            except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
                stats.error(f"{type(exc).__name__}")
                return
            stats.done(status, time.perf_counter() - started, body)
            protocols.append(protocol)

    started = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(args.connections)))
    seconds = time.perf_counter() - started
    alive = sum(1 for p in protocols if not p.finished.done())
    say(f"READY {alive}")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await asyncio.wait_for(reader.readline(), args.hold)
    except TimeoutError:
        pass
    still_open = sum(1 for p in protocols if not p.finished.done())
    for protocol in protocols:
        protocol.transport.close()
    return stats.report("idle", seconds, connections=args.connections, held=alive,
                        still_open_at_end=still_open)


MODES: dict[str, Callable[[argparse.Namespace, Target], Any]] = {
    "keepalive": keepalive, "newconn": newconn, "download": download,
    "firsthost": firsthost, "idle": idle,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--host", default="127.0.0.1", help="origin address (loopback only)")
    parser.add_argument("--port", type=int, required=True, help="origin port")
    parser.add_argument("--proxy-port", type=int, default=0, help="proxy on 127.0.0.1")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--sni", default="", help="TLS server name (default: none for an IP)")
    parser.add_argument("--cafile", default="", help="CA to trust (origin's, or the proxy's)")
    parser.add_argument("--path", default="/1k")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--max-requests", type=int, default=50_000_000)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request (not keepalive)")
    parser.add_argument("--hold", type=float, default=120.0, help="idle: longest hold, seconds")
    parser.add_argument("--tag", default="x", help="firsthost: makes the SNI names unique")
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        parser.error("--host must be a loopback address")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 65536)), hard))
    context = None
    if args.tls:
        context = ssl.create_default_context(cafile=args.cafile or None)
        context.set_alpn_protocols(["http/1.1"])
    target = Target(args.host, args.port, args.proxy_port, args.tls, args.sni, context)
    coroutine = MODES[args.mode](args, target)
    try:
        import uvloop

        result = uvloop.run(coroutine)
    except ImportError:
        result = asyncio.run(coroutine)
    say(json.dumps(result))


if __name__ == "__main__":
    main()
