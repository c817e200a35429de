"""Micro-benchmarks: h11 request/response cycle, hook dispatch, leaf certificate mint.

    python benchmarks/micro.py [--scale 1.0]

Each figure is the median of several timed batches (bounded iteration counts; ``--scale``
multiplies them). No sockets: this is the CPU cost of the parts, not of the proxy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import h11

from nectoproxy.certs import create_ca, generate_leaf_key, issue_leaf
from nectoproxy.flow import Connection, Flow, Request
from nectoproxy.plugins import PluginHost, hook_names
from nectoproxy.proxy.http1 import request_from_event, response_from_event, strip_hop_by_hop
from nectoproxy.testing import proxy_config

REQUEST = (b"GET /static/app.js?v=12 HTTP/1.1\r\nHost: www.example.test\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101\r\n"
           b"Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\n"
           b"Accept-Encoding: gzip, deflate, br\r\n"
           b"Referer: https://www.example.test/\r\nConnection: keep-alive\r\n"
           b"Cookie: session=0123456789abcdef; theme=dark\r\n\r\n")
BODY = b"x" * 1024
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
            b"Content-Type: application/javascript\r\nContent-Length: 1024\r\n"
            b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\nConnection: keep-alive\r\n"
            b"ETag: \"65920080-400\"\r\nAccept-Ranges: bytes\r\n\r\n" + BODY)


def per_call_us(function: Callable[[int], None], iterations: int, batches: int = 5) -> float:
    """Median over ``batches`` of the time per iteration, in microseconds."""
    function(max(1, iterations // 10))  # warm up
    timings = []
    for _ in range(batches):
        started = time.perf_counter()
        function(iterations)
        timings.append((time.perf_counter() - started) / iterations * 1e6)
    return statistics.median(timings)


# -- h11 ---------------------------------------------------------------------------------------


def h11_cycles(with_flow_objects: bool) -> Callable[[int], None]:
    """Parse the request (server side), re-send it (client side), parse the response, re-send
    it: what the proxy does per keep-alive request. Optionally with NectoProxy's conversions."""
    client_side = h11.Connection(h11.SERVER)  # the proxy facing the browser
    origin_side = h11.Connection(h11.CLIENT)  # the proxy facing the origin

    def run(n: int) -> None:
        for _ in range(n):
            client_side.receive_data(REQUEST)
            request: Any = client_side.next_event()
            client_side.next_event()  # EndOfMessage
            if with_flow_objects:
                flow_request = request_from_event(request, "https", "www.example.test", 443)
                strip_hop_by_hop(flow_request.headers)
                headers: Any = flow_request.headers.to_h11()
            else:
                headers = request.headers
            origin_side.send(h11.Request(method=request.method, target=request.target,
                                         headers=headers))
            origin_side.send(h11.EndOfMessage())
            origin_side.receive_data(RESPONSE)
            response: Any = origin_side.next_event()
            data: Any = origin_side.next_event()
            origin_side.next_event()  # EndOfMessage
            if with_flow_objects:
                flow_response = response_from_event(response)
                strip_hop_by_hop(flow_response.headers)
                headers = flow_response.headers.to_h11()
            else:
                headers = response.headers
            client_side.send(h11.Response(status_code=response.status_code, headers=headers,
                                          reason=response.reason))
            client_side.send(data)
            client_side.send(h11.EndOfMessage())
            client_side.start_next_cycle()
            origin_side.start_next_cycle()

    return run


# -- hook dispatch -----------------------------------------------------------------------------


class NoOp:
    def __init__(self, number: int) -> None:
        self.name = f"noop{number}"

    def on_request(self, flow: Flow) -> None:
        pass


class AsyncNoOp(NoOp):
    async def on_request(self, flow: Flow) -> None:  # type: ignore[override]
        pass


#: The hooks the engine may dispatch once per plain request (guarded by ``has``).
PER_REQUEST_HOOKS = ("on_request_headers", "on_request", "on_response_headers", "on_response",
                     "on_complete")


def dispatch_us(plugins: list[object], iterations: int, builtins: bool = False) -> float:
    """Time per request of ``if host.has(hook): await host.call(hook, flow=flow)`` over the
    per-request hooks this version has (only ``on_request`` unless ``builtins``)."""
    with tempfile.TemporaryDirectory() as directory:
        sections: dict[str, dict[str, Any]] = {"log": {"quiet": True}}
        if not builtins:
            sections["plugins"] = {"disable": ["onboarding", "flowlog"]}
        host = PluginHost(proxy_config(Path(directory), sections=sections))
        host.load(objects=plugins)
    hooks = [h for h in PER_REQUEST_HOOKS if h in hook_names()] if builtins else ["on_request"]
    flow = Flow(Connection(client_address=("127.0.0.1", 1)),
                Request.make("GET", "http://www.example.test/x"))

    async def batch(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            for hook in hooks:
                if host.has(hook):  # as the engine guards every dispatch
                    await host.call(hook, flow=flow)
        return time.perf_counter() - started

    async def measure() -> float:
        await batch(iterations // 10)
        return statistics.median([await batch(iterations) for _ in range(5)]) / iterations * 1e6

    return anyio.run(measure)


def builtin_hooks() -> str:
    with tempfile.TemporaryDirectory() as directory:
        host = PluginHost(proxy_config(Path(directory), sections={"log": {"quiet": True}}))
        host.load()
    found = [f"{h} ({', '.join(i.plugin_name for i in host.implementations(h))})"
             for h in PER_REQUEST_HOOKS if h in hook_names() and host.has(h)]
    return ", ".join(found) or "none"


# -- certificates ------------------------------------------------------------------------------


def mint_ms(iterations: int) -> float:
    ca_cert, ca_key = create_ca()
    leaf_key = generate_leaf_key()
    timings = []
    for i in range(iterations):
        started = time.perf_counter()
        issue_leaf(f"h{i}.bench.test", ca_cert=ca_cert, ca_key=ca_key, leaf_key=leaf_key)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply iteration counts")
    args = parser.parse_args()
    n = max(10, int(20_000 * args.scale))
    print(f"h11 request/response cycle (1 KiB body, 8 + 8 headers): "
          f"{per_call_us(h11_cycles(False), n // 4):.1f} us")
    print(f"  + NectoProxy flow objects (request_from_event, hop-by-hop strip, to_h11): "
          f"{per_call_us(h11_cycles(True), n // 4):.1f} us")
    print(f"hook dispatch per request, 0 plugins: {dispatch_us([], n):.2f} us")
    print(f"hook dispatch per request, built-ins of a quiet proxy [{builtin_hooks()}]: "
          f"{dispatch_us([], n, builtins=True):.2f} us")
    for count in (1, 10):
        print(f"hook dispatch per request, {count} no-op plugin(s): "
              f"{dispatch_us([NoOp(i) for i in range(count)], n):.2f} us (sync), "
              f"{dispatch_us([AsyncNoOp(i) for i in range(count)], n):.2f} us (async)")
    mints = max(5, int(100 * args.scale))
    print(f"leaf mint (issue_leaf, RSA-2048 CA signs a shared P-256 key), median of {mints}: "
          f"{mint_ms(mints):.2f} ms")


if __name__ == "__main__":
    main()
