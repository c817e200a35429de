"""Capture's CPU cost per flow in the proxy's process, without sockets.

    python benchmarks/capture_cost.py [--flows 20000] [--profile FILE]

Drives the hooks a keep-alive HTTPS request goes through (``on_request_headers`` ...
``on_complete``, the response body's tap) on a plugin host loaded as the command line loads
it with the inspector on (capture, breakpoints), against the same host without them. The
writer is the real :class:`~nectoproxy.store.ProcessWriter` with its child process; the
figure is this process's CPU time (its event loop and the sender thread) per flow, the part
that competes with proxying for the core. The child's CPU per flow is printed beside it.
Bounded: ``--flows`` flows per batch, five batches.

To see where the writer's time goes, set ``NECTOPROXY_WRITER_PROFILE=FILE``: the writer child
then runs under cProfile and dumps its stats to FILE when it closes
(``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from nectoproxy.breakpoints import Breakpoints
from nectoproxy.capture import Capture
from nectoproxy.flow import Connection, Flow, Headers, Request, Response, ServerTLSInfo, TLSInfo
from nectoproxy.plugins import PluginHost
from nectoproxy.store import ProcessWriter
from nectoproxy.testing import proxy_config

REQUEST_HEADERS = [
    ("Host", "www.example.test"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("Accept", "*/*"), ("Accept-Language", "en-US,en;q=0.5"),
    ("Accept-Encoding", "gzip, deflate, br"), ("Referer", "https://www.example.test/"),
    ("Connection", "keep-alive"), ("Cookie", "session=0123456789abcdef; theme=dark")]
RESPONSE_HEADERS = [
    ("Server", "nginx"), ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ("Content-Type", "application/javascript"), ("Content-Length", "1024"),
    ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"), ("Connection", "keep-alive"),
    ("ETag", '"65920080-400"'), ("Accept-Ranges", "bytes")]
BODY = b"x" * 1024
HOOKS = ("on_request_headers", "on_request", "on_response_headers", "on_response")


def _connection() -> Connection:
    connection = Connection(client_address=("127.0.0.1", 50000), target=("www.example.test", 443))
    connection.tls = TLSInfo(sni="www.example.test", version="TLSv1.3",
                             cipher="TLS_AES_256_GCM_SHA384", alpn="http/1.1")
    return connection


async def _flows(host: PluginHost, connection: Connection, server_tls: ServerTLSInfo,
                 count: int) -> None:
    """What the exchange does per request, hooks and taps only (guarded by ``has``)."""
    for _ in range(count):
        request = Request("GET", "https", "www.example.test", 443, "/static/app.js?v=12",
                          Headers(list(REQUEST_HEADERS)), None)
        flow = Flow(connection, request)
        flow.received_request_headers = list(request.headers.fields)
        for hook in HOOKS[:2]:
            if host.has(hook):
                await host.call(hook, flow=flow)
        now = time.time()
        flow.timestamp_request_sent = now
        flow.server_address = ("127.0.0.1", 443)
        flow.server_tls = server_tls
        flow.response = Response(200, Headers(list(RESPONSE_HEADERS)), None, reason="OK")
        flow.received_response_headers = list(flow.response.headers.fields)
        flow.timestamp_response_start = now
        for hook in HOOKS[2:]:
            if host.has(hook):
                await host.call(hook, flow=flow)
        if flow.body_taps:
            await flow.tap("response", BODY)
        flow.response_body_size = len(BODY)
        flow.timestamp_end = time.time()
        if host.has("on_complete"):
            await host.call("on_complete", flow=flow)


def _child_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(flows: int, capture: bool, profile: str | None = None) -> tuple[float, float]:
    """Median process CPU per flow (µs) over five batches, and the child's per flow."""
    with tempfile.TemporaryDirectory() as directory:
        config = proxy_config(Path(directory), sections={"log": {"quiet": True}})
        host = PluginHost(config)
        writer = ProcessWriter(Path(directory) / "flows.db") if capture else None
        plugins: list[object] = []
        if writer is not None:
            plugins = [Capture(writer), Breakpoints(config)]
        host.load(objects=plugins)
        connection = _connection()
        server_tls = ServerTLSInfo(sni="www.example.test", version="TLSv1.3",
                                   cipher="TLS_AES_256_GCM_SHA384", alpn="http/1.1")
        timings: list[float] = []
        profiler = cProfile.Profile() if profile else None

        async def run() -> None:
            await _flows(host, connection, server_tls, flows // 10)  # warm up
            for index in range(5):
                started = time.process_time()
                if profiler is not None and index == 4:
                    profiler.enable()
                await _flows(host, connection, server_tls, flows)
                if profiler is not None and index == 4:
                    profiler.disable()
                await anyio.sleep(0.05)  # the sender thread's share lands in this batch
                timings.append((time.process_time() - started) / flows * 1e6)

        child_before = _child_cpu(writer.pid) if writer and writer.pid else 0.0
        anyio.run(run)
        child = 0.0
        if writer is not None:
            writer.flush(60)
            if writer.pid:
                child = (_child_cpu(writer.pid) - child_before) / (flows * 5.1) * 1e6
            writer.close()
        if profiler is not None and profile:
            profiler.dump_stats(profile)
        return statistics.median(timings), child


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flows", type=int, default=20_000, help="flows per batch (5 batches)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the last batch with capture")
    args = parser.parse_args()
    flows = max(100, min(args.flows, 200_000))
    off, _ = measure(flows, capture=False)
    on, child = measure(flows, capture=True, profile=args.profile)
    print(f"hooks and taps per flow, capture off: {off:.1f} µs of this process's CPU")
    print(f"hooks and taps per flow, capture on:  {on:.1f} µs (+{on - off:.1f} µs); "
          f"the writer process: {child:.1f} µs per flow")


if __name__ == "__main__":
    main()
