"""Every HTTP/2 stream is a flow (issue 16): the same hooks, the same capture in the store,
trailers kept, bodies that stream both ways at once. A raw ``h2`` client (frames written
exactly as the test says) CONNECTs through the proxy to the HTTP/2 test origin
(:class:`nectoproxy.testing.h2origin.H2Origin`).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from h2site import H2Source, big_body
from test_capture import Captured
from wire import read_head, wait_until

from nectoproxy import hookimpl
from nectoproxy.testing import RunningProxy
from nectoproxy.testing.h2origin import H2Origin
from nectoproxy.testing.origin import pattern_bytes

#: Seconds a socket read may wait: a proxy that holds a body back fails the test, not hangs it.
TIMEOUT = 10.0


class Response:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.trailers: dict[str, str] = {}
        self.ended = False


class RawH2:
    """An HTTP/2 client connection through the proxy: CONNECT, TLS with ALPN ``h2`` (trusting
    the proxy's CA), then frames the test sends as it likes."""

    def __init__(self, proxy: RunningProxy, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
        self.sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n"
                          f"Host: 127.0.0.1:{port}\r\n\r\n".encode())
        head, rest = read_head(self.sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert rest == b""
        context = ssl.create_default_context(cafile=str(proxy.ca_path))
        context.set_alpn_protocols(["h2"])
        self.tls = context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        assert self.tls.selected_alpn_protocol() == "h2"
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.flush()
        self.responses: dict[int, Response] = {}
        #: Whether DATA is acknowledged as it arrives (False: the flow-control windows shut).
        self.reading = True

    def flush(self) -> None:
        self.tls.sendall(self.h2.data_to_send())

    def request(self, method: str, path: str, port: int, body: bytes | None = None,
                headers: tuple[tuple[str, str], ...] = (), end: bool = True) -> int:
        """Send HEADERS and (if ``body``) DATA in one write; END_STREAM on the last frame
        when ``end``."""
        stream_id = self.h2.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "https"), (":authority", f"127.0.0.1:{port}"),
                  (":path", path), *headers]
        self.h2.send_headers(stream_id, fields, end_stream=end and body is None)
        if body is not None:
            self.h2.send_data(stream_id, body, end_stream=end)
        self.responses[stream_id] = Response()
        self.flush()
        return stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.h2.send_data(stream_id, data, end_stream=end)
        self.flush()

    def read_until(self, done: Callable[[], bool]) -> None:
        while not done():
            data = self.tls.recv(65536)
            assert data, "the proxy closed the connection"
            for event in self.h2.receive_data(data):
                self._event(event)
            self.flush()

    def _event(self, event: h2.events.Event) -> None:
        response = self.responses.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and response is not None:
            response.headers = {k.decode(): v.decode() for k, v in event.headers or []}
        elif isinstance(event, h2.events.DataReceived) and response is not None:
            response.body += event.data or b""
            if self.reading:
                self.h2.acknowledge_received_data(event.flow_controlled_length or 0,
                                                  event.stream_id or 0)
        elif isinstance(event, h2.events.TrailersReceived) and response is not None:
            response.trailers = {k.decode(): v.decode() for k, v in event.headers or []}
        elif isinstance(event, h2.events.StreamEnded) and response is not None:
            response.ended = True
        elif isinstance(event, h2.events.StreamReset):
            raise AssertionError(f"stream {event.stream_id} reset: {event.error_code!r}")

    def complete(self, stream_id: int) -> Response:
        response = self.responses[stream_id]
        self.read_until(lambda: response.ended)
        return response

    def close(self) -> None:
        self.tls.close()


@pytest.fixture
def h2_origin(origin_ca: Any) -> Iterator[H2Origin]:
    with H2Origin(ca=origin_ca) as origin:
        yield origin


@pytest.fixture
def connect() -> Iterator[Callable[[RunningProxy, int], RawH2]]:
    opened: list[RawH2] = []

    def factory(proxy: RunningProxy, port: int) -> RawH2:
        opened.append(RawH2(proxy, port))
        return opened[-1]

    yield factory
    for client in opened:
        client.close()


class HookLog:
    """Which hooks ran for which path, and what the flow held at ``on_complete``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []
        self.completed: dict[str, Any] = {}

    def _log(self, hook: str, flow: Any) -> None:
        with self.lock:
            self.calls.append((hook, flow.request.path))

    @hookimpl
    def on_request_headers(self, flow: Any) -> None:
        self._log("on_request_headers", flow)

    @hookimpl
    def on_response_headers(self, flow: Any) -> None:
        self._log("on_response_headers", flow)

    @hookimpl
    def on_complete(self, flow: Any) -> None:
        self._log("on_complete", flow)
        response = flow.response
        with self.lock:
            self.completed[flow.request.path] = {
                "version": flow.request.http_version,
                "trailers": None if response.trailers is None else dict(response.trailers.items()),
                "response_body_size": flow.response_body_size}

    def hooks_for(self, path: str) -> list[str]:
        with self.lock:
            return [hook for hook, seen in self.calls if seen == path]


def test_concurrent_streams_are_flows_with_every_hook_and_in_the_store(
        make_proxy: Callable[..., RunningProxy], h2_origin: H2Origin,
        connect: Callable[[RunningProxy, int], RawH2], tmp_path: Path) -> None:
    log = HookLog()
    captured = Captured(tmp_path / "flows.db")
    sizes = [1000 * (n + 1) for n in range(10)]
    try:
        with make_proxy(plugins=[log, captured.plugin]) as proxy:
            client = connect(proxy, h2_origin.port)
            streams = [client.request("GET", f"/bytes/{size}?seed={n}", h2_origin.port)
                       for n, size in enumerate(sizes)]
            for n, (stream_id, size) in enumerate(zip(streams, sizes, strict=True)):
                response = client.complete(stream_id)
                assert response.headers[":status"] == "200"
                assert bytes(response.body) == pattern_bytes(size, n)
            assert wait_until(lambda: len(log.completed) == len(sizes))
            # One HTTP/2 connection to the origin carries them all, as the client's did.
            assert h2_origin.connections == 1
        for n, size in enumerate(sizes):
            path = f"/bytes/{size}?seed={n}"
            assert log.hooks_for(path) == ["on_request_headers", "on_response_headers",
                                           "on_complete"]
            assert log.completed[path]["version"] == "HTTP/2.0"
            assert log.completed[path]["response_body_size"] == size
        records = {f.path: f for f in captured.flows()}
        assert len(records) == len(sizes)
        for n, size in enumerate(sizes):
            record = records[f"/bytes/{size}?seed={n}"]
            assert (record.http_version, record.status, record.scheme) == ("HTTP/2.0", 200,
                                                                            "https")
            assert captured.body(record.id, "response") == (pattern_bytes(size, n), False)
    finally:
        captured.close()


def test_a_body_sent_in_the_same_write_as_its_headers_reaches_the_origin(
        make_proxy: Callable[..., RunningProxy], h2_origin: H2Origin,
        connect: Callable[[RunningProxy, int], RawH2]) -> None:
    """HEADERS and DATA with END_STREAM in one write, no content-length (what a gRPC unary
    call sends): the proxy reads both before the flow starts, and must still see a body."""
    with make_proxy() as proxy:
        client = connect(proxy, h2_origin.port)
        stream_id = client.request("POST", "/echo", h2_origin.port, body=b"framed message",
                                   headers=(("content-type", "application/grpc"),))
        response = client.complete(stream_id)
    assert response.headers[":status"] == "200"
    assert bytes(response.body) == b"framed message"
    assert h2_origin.requests[-1].body_length == len(b"framed message")


def test_trailers_of_a_streamed_response_are_kept_on_the_flow(
        make_proxy: Callable[..., RunningProxy], h2_origin: H2Origin,
        connect: Callable[[RunningProxy, int], RawH2]) -> None:
    """No plugin asked for the body (it is relayed, not buffered), yet ``on_complete`` must see
    the response's trailers: gRPC's status lives there."""
    log = HookLog()
    with make_proxy(plugins=[log]) as proxy:
        client = connect(proxy, h2_origin.port)
        response = client.complete(client.request("GET", "/trailers", h2_origin.port,
                                                  headers=(("te", "trailers"),)))
        assert response.trailers == {"grpc-status": "0", "grpc-message": "fine"}
        assert wait_until(lambda: "/trailers" in log.completed)
    assert log.completed["/trailers"]["trailers"] == {"grpc-status": "0",
                                                      "grpc-message": "fine"}


def test_a_response_streams_back_while_the_request_is_still_open(
        make_proxy: Callable[..., RunningProxy], h2_origin: H2Origin,
        connect: Callable[[RunningProxy, int], RawH2]) -> None:
    """The origin echoes each DATA frame as it arrives; the client waits for each echo before
    sending more (gRPC bidirectional streaming). A proxy that forwards the response only once
    the request has ended never delivers the first echo (the read times out)."""
    with make_proxy() as proxy:
        client = connect(proxy, h2_origin.port)
        stream_id = client.request("POST", "/stream", h2_origin.port, body=b"one", end=False)
        response = client.responses[stream_id]
        client.read_until(lambda: bytes(response.body) == b"one")
        client.send(stream_id, b"two")
        client.read_until(lambda: bytes(response.body) == b"onetwo")
        client.send(stream_id, b"", end=True)
        client.complete(stream_id)
    assert response.trailers == {"x-chunks": "2"}


def plateau(value: Callable[[], int], polls: int = 10, most: int = 200) -> int:
    """``value()`` once it has stayed the same for ``polls`` polls 50 ms apart (at most
    ``most`` polls in all)."""
    import time

    last, same = value(), 0
    for _ in range(most):
        time.sleep(0.05)
        now = value()
        same = same + 1 if now == last else 0
        last = now
        if same >= polls:
            break
    return last


def test_a_client_that_stops_reading_holds_the_origin_back(
        make_proxy: Callable[..., RunningProxy], origin_ca: Any,
        connect: Callable[[RunningProxy, int], RawH2]) -> None:
    """Back-pressure through the proxy: the client stops giving flow-control credit after the
    first window (64 KiB); the origin must soon be unable to send more (the proxy neither
    buffers the 32 MiB nor reads on), and everything arrives once the client reads again."""
    size = 32 * 1024 * 1024
    with H2Source(origin_ca, size) as source, make_proxy() as proxy:
        client = connect(proxy, source.port)
        client.reading = False
        stream_id = client.request("GET", "/big", source.port)
        response = client.responses[stream_id]
        client.read_until(lambda: len(response.body) >= 65_535)
        held = plateau(lambda: source.sent)
        assert 0 < held < 2 * 1024 * 1024, held
        assert len(response.body) == 65_535  # (the client's window, not a byte more)
        client.reading = True
        client.h2.acknowledge_received_data(len(response.body), stream_id)
        client.flush()
        client.complete(stream_id)
    assert response.headers[":status"] == "200"
    assert len(response.body) == size
    assert bytes(response.body) == big_body(size)
