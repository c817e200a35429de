"""gRPC through the proxy (issue 16): a real grpcio server over TLS (a trustme certificate) and
a grpcio client whose channel CONNECTs through NectoProxy, so every call is an HTTP/2 stream
the proxy intercepts, runs as a flow, and forwards to the origin over HTTP/2.

The service is defined with generic handlers and raw bytes (no protoc, no generated code).
Every call is bounded by a gRPC deadline: an engine that buffers a streaming body fails with
DEADLINE_EXCEEDED instead of hanging.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc  # the [test] extra
import pytest
from test_capture import Captured
from wire import wait_until

from nectoproxy import hookimpl
from nectoproxy.testing import RunningProxy

SERVICE = "nectoproxy.test.Echo"
#: Seconds every call may take (a gRPC deadline: the call fails, the test does not hang).
DEADLINE = 20.0
#: Messages large enough that a stream's bodies cross many HTTP/2 flow-control windows.
BIG_MESSAGE = 64 * 1024
BIG_COUNT = 48


def _pattern(index: int, size: int) -> bytes:
    return (f"{index:08d}".encode() * (size // 8 + 1))[:size]


# -- the gRPC origin -------------------------------------------------------------------------


def _echo(request: bytes, context: Any) -> bytes:
    context.set_trailing_metadata((("x-served-by", "grpc-origin"),))
    return b"echo:" + request


def _count(request: bytes, context: Any) -> Iterator[bytes]:
    """``b"N"``: N small messages; ``b"big"``: BIG_COUNT large ones; ``b"fail"``: two messages,
    then a non-OK status with details and trailing metadata (real trailers, after DATA)."""
    if request == b"fail":
        yield b"first"
        yield b"second"
        context.set_trailing_metadata((("x-quota", "spent"),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota gone")
    if request == b"big":
        for index in range(BIG_COUNT):
            yield _pattern(index, BIG_MESSAGE)
        return
    for index in range(int(request)):
        yield f"item-{index}".encode()


def _join(requests: Iterable[bytes], context: Any) -> bytes:
    """The number of messages and the SHA-256 of their concatenation."""
    digest = hashlib.sha256()
    count = 0
    for message in requests:
        digest.update(message)
        count += 1
    return f"{count}:{digest.hexdigest()}".encode()


def _chat(requests: Iterable[bytes], context: Any) -> Iterator[bytes]:
    """Answers each message as it arrives (the client waits for each answer before sending
    its next message)."""
    for message in requests:
        yield b"re:" + message


def _refuse(request: bytes, context: Any) -> bytes:
    """A non-OK status with no message (gRPC's trailers-only response: one HEADERS frame)."""
    context.set_trailing_metadata((("x-reason", "policy"),))
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "not for you")
    raise AssertionError("abort returns only by raising")


HANDLERS = {
    "Echo": grpc.unary_unary_rpc_method_handler(_echo),
    "Count": grpc.unary_stream_rpc_method_handler(_count),
    "Join": grpc.stream_unary_rpc_method_handler(_join),
    "Chat": grpc.stream_stream_rpc_method_handler(_chat),
    "Refuse": grpc.unary_unary_rpc_method_handler(_refuse),
}


@pytest.fixture
def grpc_origin(origin_ca: Any) -> Iterator[int]:
    """A grpcio server over TLS on 127.0.0.1 (its certificate from the CA the test proxies
    trust upstream); yields its port."""
    cert = origin_ca.issue_cert("127.0.0.1")
    chain = b"".join(pem.bytes() for pem in cert.cert_chain_pems)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    credentials = grpc.ssl_server_credentials([(cert.private_key_pem.bytes(), chain)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None).wait(10)


class Client:
    """A grpcio channel to the origin through the proxy: CONNECT 127.0.0.1:PORT (the
    ``grpc.http_proxy`` channel option), trusting the proxy's CA, which signs the leaf the
    proxy mints for 127.0.0.1."""

    def __init__(self, proxy: RunningProxy, port: int) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=proxy.ca_path.read_bytes())
        self.channel = grpc.secure_channel(
            f"127.0.0.1:{port}", credentials,
            options=[("grpc.http_proxy", proxy.url), ("grpc.enable_retries", 0)])

    def method(self, kind: str, name: str) -> Any:
        return getattr(self.channel, kind)(f"/{SERVICE}/{name}")

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def grpc_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[RunningProxy, int], Client]]:
    # (gRPC skips its proxy for the hosts these name: the test must go through the proxy.)
    for name in ("no_proxy", "NO_PROXY", "no_grpc_proxy", "NO_GRPC_PROXY"):
        monkeypatch.delenv(name, raising=False)
    clients: list[Client] = []

    def factory(proxy: RunningProxy, port: int) -> Client:
        clients.append(Client(proxy, port))
        return clients[-1]

    yield factory
    for client in clients:
        client.close()


# -- a plugin that reads the gRPC messages ---------------------------------------------------


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """gRPC length-prefixed messages: (compressed flag, payload) each; the bytes must split
    exactly into messages."""
    messages: list[tuple[int, bytes]] = []
    view = memoryview(data)
    while view:
        assert len(view) >= 5, bytes(view)
        length = int.from_bytes(view[1:5], "big")
        assert len(view) >= 5 + length, (length, len(view))
        messages.append((view[0], bytes(view[5:5 + length])))
        view = view[5 + length:]
    return messages


def framed(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


class GrpcWatcher:
    """Reads the messages of every gRPC flow as they are relayed (a body tap added in
    ``on_request_headers``: it sees each chunk without making the body buffer), and keeps the
    status each call ended with."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: (path, "request" | "response") -> the messages' payloads, in order.
        self.messages: dict[tuple[str, str], list[bytes]] = {}
        #: path -> (request http_version, response headers, response trailers) at on_complete.
        self.completed: dict[str, tuple[str, dict[str, str], dict[str, str] | None]] = {}
        self.seen_at_headers: dict[str, str] = {}

    @hookimpl
    def on_request_headers(self, flow: Any) -> None:
        request = flow.request
        if not request.headers.get("content-type", "").startswith("application/grpc"):
            return
        path = request.path
        self.seen_at_headers[path] = request.http_version
        pending = {"request": bytearray(), "response": bytearray()}

        def tap(direction: str, chunk: bytes | bytearray) -> None:
            buffer = pending[direction]
            buffer += chunk
            while len(buffer) >= 5:
                end = 5 + int.from_bytes(buffer[1:5], "big")
                if len(buffer) < end:
                    break
                with self.lock:
                    self.messages.setdefault((path, direction), []).append(bytes(buffer[5:end]))
                del buffer[:end]

        flow.body_taps.append(tap)

    @hookimpl
    def on_complete(self, flow: Any) -> None:
        response = flow.response
        trailers = dict(response.trailers.items()) if response.trailers is not None else None
        with self.lock:
            self.completed[flow.request.path] = (
                flow.request.http_version, dict(response.headers.items()), trailers)

    def got(self, name: str, direction: str) -> list[bytes]:
        with self.lock:
            return list(self.messages.get((f"/{SERVICE}/{name}", direction), []))

    def ended(self, name: str) -> tuple[str, dict[str, str], dict[str, str] | None]:
        assert wait_until(lambda: f"/{SERVICE}/{name}" in self.completed), self.completed
        with self.lock:
            return self.completed[f"/{SERVICE}/{name}"]


def grpc_status(headers: dict[str, str], trailers: dict[str, str] | None) -> tuple[str, str]:
    """(grpc-status, grpc-message) from the trailers, or from the headers of a trailers-only
    response."""
    fields = trailers if trailers and "grpc-status" in trailers else headers
    return fields.get("grpc-status", ""), fields.get("grpc-message", "")


# -- the calls -------------------------------------------------------------------------------


def test_unary_call_is_one_http2_flow_with_its_trailers_and_message_bytes(
        make_proxy: Callable[..., RunningProxy], grpc_origin: int,
        grpc_client: Callable[[RunningProxy, int], Client], tmp_path: Path) -> None:
    watcher = GrpcWatcher()
    captured = Captured(tmp_path / "flows.db")
    try:
        with make_proxy(plugins=[watcher, captured.plugin]) as proxy:
            client = grpc_client(proxy, grpc_origin)
            reply, call = client.method("unary_unary", "Echo").with_call(
                b"hello", timeout=DEADLINE, metadata=(("x-caller", "test"),))
            assert reply == b"echo:hello"
            assert call.code() == grpc.StatusCode.OK
            assert ("x-served-by", "grpc-origin") in tuple(call.trailing_metadata())
            version, headers, trailers = watcher.ended("Echo")
        assert version == "HTTP/2.0"
        assert watcher.seen_at_headers[f"/{SERVICE}/Echo"] == "HTTP/2.0"
        assert headers["content-type"].startswith("application/grpc")
        assert trailers is not None, "the response's trailers were not kept on the flow"
        assert trailers["grpc-status"] == "0"
        assert trailers["x-served-by"] == "grpc-origin"
        assert watcher.got("Echo", "request") == [b"hello"]
        assert watcher.got("Echo", "response") == [b"echo:hello"]

        flows = [f for f in captured.flows() if f.path == f"/{SERVICE}/Echo"]
        assert len(flows) == 1, flows
        flow = flows[0]
        assert (flow.method, flow.scheme, flow.status) == ("POST", "https", 200)
        assert flow.http_version == "HTTP/2.0"
        assert flow.url == f"https://127.0.0.1:{grpc_origin}/{SERVICE}/Echo"
        assert ("x-caller", "test") in flow.request_headers
        assert captured.body(flow.id, "request") == (framed(b"hello"), False)
        assert captured.body(flow.id, "response") == (framed(b"echo:hello"), False)
    finally:
        captured.close()


def test_server_streaming_delivers_every_message_in_order(
        make_proxy: Callable[..., RunningProxy], grpc_origin: int,
        grpc_client: Callable[[RunningProxy, int], Client]) -> None:
    watcher = GrpcWatcher()
    with make_proxy(plugins=[watcher]) as proxy:
        count = grpc_client(proxy, grpc_origin).method("unary_stream", "Count")
        assert list(count(b"5", timeout=DEADLINE)) == [f"item-{i}".encode() for i in range(5)]
        # Far more than one flow-control window (64 KiB by default) in one response.
        big = list(count(b"big", timeout=DEADLINE))
        assert big == [_pattern(i, BIG_MESSAGE) for i in range(BIG_COUNT)]
        _, _, trailers = watcher.ended("Count")
    assert trailers is not None and trailers["grpc-status"] == "0"
    assert watcher.got("Count", "request") == [b"5", b"big"]
    assert watcher.got("Count", "response") == (
        [f"item-{i}".encode() for i in range(5)]
        + [_pattern(i, BIG_MESSAGE) for i in range(BIG_COUNT)])


def test_client_streaming_uploads_every_message(
        make_proxy: Callable[..., RunningProxy], grpc_origin: int,
        grpc_client: Callable[[RunningProxy, int], Client]) -> None:
    watcher = GrpcWatcher()
    messages = [_pattern(i, BIG_MESSAGE) for i in range(BIG_COUNT)]
    with make_proxy(plugins=[watcher]) as proxy:
        join = grpc_client(proxy, grpc_origin).method("stream_unary", "Join")
        reply = join(iter(messages), timeout=DEADLINE)
        _, _, trailers = watcher.ended("Join")
    assert reply == f"{BIG_COUNT}:{hashlib.sha256(b''.join(messages)).hexdigest()}".encode()
    assert trailers is not None and trailers["grpc-status"] == "0"
    assert watcher.got("Join", "request") == messages
    assert watcher.got("Join", "response") == [reply]


class Conversation:
    """The client side of an interleaved bidirectional call: ``say`` sends one message and
    returns the answer to it; nothing more is sent until that answer has come back."""

    def __init__(self, chat: Any) -> None:
        self.outgoing: queue.Queue[bytes | None] = queue.Queue()
        self.answers = chat(self._requests(), timeout=DEADLINE)

    def _requests(self) -> Iterator[bytes]:
        while (message := self.outgoing.get(timeout=DEADLINE)) is not None:
            yield message

    def say(self, message: bytes) -> bytes:
        self.outgoing.put(message)
        return bytes(next(self.answers))

    def end(self) -> list[bytes]:
        self.outgoing.put(None)
        return list(self.answers)


def test_bidirectional_messages_interleave_through_the_proxy(
        start_proxy: Callable[..., RunningProxy], grpc_origin: int,
        grpc_client: Callable[[RunningProxy, int], Client]) -> None:
    """Each answer must arrive while the request body is still open: a proxy that waits for
    the whole request before forwarding it (or for the whole response) runs into the
    deadline. In every I/O set-up of the proxy (asyncio, uvloop, anyio's streams)."""
    watcher = GrpcWatcher()
    with start_proxy(plugins=[watcher]) as proxy:
        talk = Conversation(grpc_client(proxy, grpc_origin).method("stream_stream", "Chat"))
        for index in range(5):
            assert talk.say(f"ping-{index}".encode()) == f"re:ping-{index}".encode()
            # The plugin saw this message pass before the stream ended.
            assert watcher.got("Chat", "request")[-1:] == [f"ping-{index}".encode()]
        assert talk.end() == []
        _, _, trailers = watcher.ended("Chat")
    assert trailers is not None and trailers["grpc-status"] == "0"
    assert watcher.got("Chat", "request") == [f"ping-{i}".encode() for i in range(5)]
    assert watcher.got("Chat", "response") == [f"re:ping-{i}".encode() for i in range(5)]


def test_bidirectional_bodies_flow_both_ways_at_once(
        start_proxy: Callable[..., RunningProxy], grpc_origin: int,
        grpc_client: Callable[[RunningProxy, int], Client]) -> None:
    """The client sends megabytes without reading while the server echoes them: the proxy
    must read the request stream while the response stream is blocked on flow control (and
    the other way round), or the call stalls into its deadline."""
    messages = [_pattern(i, BIG_MESSAGE) for i in range(BIG_COUNT)]
    with start_proxy() as proxy:
        chat = grpc_client(proxy, grpc_origin).method("stream_stream", "Chat")
        answers = list(chat(iter(messages), timeout=DEADLINE))
    assert answers == [b"re:" + message for message in messages]


def test_a_non_ok_status_reaches_the_client_with_details_and_trailing_metadata(
        make_proxy: Callable[..., RunningProxy], grpc_origin: int,
        grpc_client: Callable[[RunningProxy, int], Client]) -> None:
    watcher = GrpcWatcher()
    with make_proxy(plugins=[watcher]) as proxy:
        client = grpc_client(proxy, grpc_origin)
        with pytest.raises(grpc.RpcError) as refused:
            client.method("unary_unary", "Refuse")(b"please", timeout=DEADLINE)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details() == "not for you"
        assert ("x-reason", "policy") in tuple(refused.value.trailing_metadata())

        received: list[bytes] = []
        with pytest.raises(grpc.RpcError) as failed:
            received.extend(client.method("unary_stream", "Count")(b"fail", timeout=DEADLINE))
        assert received == [b"first", b"second"]
        assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert failed.value.details() == "quota gone"
        assert ("x-quota", "spent") in tuple(failed.value.trailing_metadata())
        _, headers, trailers = watcher.ended("Count")
        _, refuse_headers, refuse_trailers = watcher.ended("Refuse")
    # After DATA, the status is in real trailers; the flow keeps them.
    assert trailers is not None, "the response's trailers were not kept on the flow"
    assert grpc_status(headers, trailers) == ("8", "quota gone")
    assert trailers["x-quota"] == "spent"
    assert watcher.got("Count", "response") == [b"first", b"second"]
    # With no message, gRPC sends the status in the one HEADERS frame (trailers-only).
    assert grpc_status(refuse_headers, refuse_trailers) == ("7", "not for you")


class BufferingPlugin:
    """A plugin with ``on_request`` and ``on_response``: hooks that get whole bodies."""

    def __init__(self) -> None:
        self.requests: list[bytes | None] = []

    @hookimpl
    def on_request(self, flow: Any) -> None:
        self.requests.append(flow.request.raw_content)

    @hookimpl
    def on_response(self, flow: Any) -> None:
        flow.response.headers["x-seen"] = "1"


def test_unary_calls_work_with_a_plugin_that_reads_whole_bodies(
        make_proxy: Callable[..., RunningProxy], grpc_origin: int,
        grpc_client: Callable[[RunningProxy, int], Client]) -> None:
    plugin = BufferingPlugin()
    with make_proxy(plugins=[plugin]) as proxy:
        client = grpc_client(proxy, grpc_origin)
        reply, call = client.method("unary_unary", "Echo").with_call(b"whole", timeout=DEADLINE)
        assert reply == b"echo:whole"
        assert ("x-seen", "1") in tuple(call.initial_metadata())
        assert ("x-served-by", "grpc-origin") in tuple(call.trailing_metadata())
    assert plugin.requests == [framed(b"whole")]


def test_a_channel_finds_the_proxy_in_the_https_proxy_environment_variable(
        make_proxy: Callable[..., RunningProxy], grpc_origin: int,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What docs/http2.md tells gRPC users: no channel option, only ``https_proxy`` (gRPC's
    C core reads ``grpc_proxy``, ``https_proxy``, ``http_proxy``) and the proxy's CA."""
    for name in ("no_proxy", "NO_PROXY", "no_grpc_proxy", "NO_GRPC_PROXY", "grpc_proxy",
                 "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    captured = Captured(tmp_path / "flows.db")
    try:
        with make_proxy(plugins=[captured.plugin]) as proxy:
            monkeypatch.setenv("https_proxy", proxy.url)
            credentials = grpc.ssl_channel_credentials(proxy.ca_path.read_bytes())
            with grpc.secure_channel(f"127.0.0.1:{grpc_origin}", credentials) as channel:
                echo = channel.unary_unary(f"/{SERVICE}/Echo")
                assert echo(b"from the environment", timeout=DEADLINE) == \
                    b"echo:from the environment"
        (flow,) = [f for f in captured.flows() if f.path == f"/{SERVICE}/Echo"]
        assert flow.http_version == "HTTP/2.0"
    finally:
        captured.close()
