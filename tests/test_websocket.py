"""WebSocket messages through the proxy: real clients and servers (the websockets package),
plain and inside intercepted TLS, parsed (hooks, taps) or relayed opaque."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from nectoproxy.testing import RunningProxy

SIZES = [0, 125, 126, 64 * 1024, 16 * 1024 * 1024]


def payload(size: int, text: bool) -> str | bytes:
    if text:
        return ("añ€" * (size // 6 + 1)).encode()[:size].decode("utf-8", "ignore")
    return bytes(range(256)) * (size // 256) + bytes(size % 256)


@contextlib.asynccontextmanager
async def echo_server(tls: ssl.SSLContext | None = None, compression: str | None = "deflate"
                      ) -> AsyncIterator[tuple[int, list[tuple[int | None, str | None]]]]:
    """An echo server; "close 4002" makes it close with that code. Yields its port and the
    (code, reason) each connection ended with, as the server saw them."""
    closes: list[tuple[int | None, str | None]] = []

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                if message == "close 4002":
                    await ws.close(4002, "server says bye")
                    break
                await ws.send(message)
        except ConnectionClosed:
            pass
        await ws.wait_closed()
        closes.append((ws.close_code, ws.close_reason))

    async with serve(handler, "127.0.0.1", 0, ssl=tls, max_size=None,
                     compression=compression) as server:
        yield server.sockets[0].getsockname()[1], closes


def client(proxy: RunningProxy, port: int, *, tls: bool = False,
           compression: str | None = "deflate") -> Any:
    if tls:
        context = ssl.create_default_context(cafile=str(proxy.ca_path))
        return connect(f"wss://localhost:{port}/chat", proxy=proxy.url, ssl=context,
                       max_size=None, compression=compression, open_timeout=10)
    return connect(f"ws://127.0.0.1:{port}/chat", proxy=proxy.url, max_size=None,
                   compression=compression, open_timeout=10)


def tls_origin_context(origin_ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    origin_ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


class Recorder:
    """Taps every message (so the connection is parsed without a message hook) and records
    the ends."""

    def __init__(self) -> None:
        self.pieces: list[tuple[str, bool, int, bool]] = []
        self.ended: list[Any] = []

    def on_websocket_start(self, flow: Any) -> None:
        def tap(message: Any, piece: bytes, last: bool) -> None:
            self.pieces.append((message.direction, message.is_text, len(piece), last))
        flow.websocket.message_taps.append(tap)

    def on_websocket_end(self, flow: Any) -> None:
        ws = flow.websocket
        self.ended.append((ws.parsed, ws.close_code, ws.close_reason, ws.closed_by_client,
                           ws.messages_from_client, ws.messages_from_server))


async def wait_for(condition: Any, seconds: float = 10) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while not condition():
                await asyncio.sleep(0.02)


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_messages_of_every_size_stream_through_a_tap(make_proxy, compression):
    recorder = Recorder()

    async def scenario() -> None:
        async with echo_server(compression=compression) as (port, closes):
            async with client(proxy, port, compression=compression) as ws:
                for size in SIZES:
                    for text in (True, False):
                        message = payload(size, text)
                        await ws.send(message)
                        assert await ws.recv() == message, (size, text)
                await ws.send([b"frag", b"mented", b""])  # one message in three frames
                assert await ws.recv() == b"fragmented"
                await ws.send(["fr", "ägmented"])
                assert await ws.recv() == "frägmented"
                await ws.ping(b"are you there")  # answered by the server, through the proxy
                await ws.close(4001, "client says bye")
            await wait_for(lambda: closes and recorder.ended)
            assert closes == [(4001, "client says bye")]

    with make_proxy(plugins=[recorder]) as proxy:
        asyncio.run(scenario())
    messages = 2 * len(SIZES) + 2
    assert recorder.ended == [(True, 4001, "client says bye", True, messages, messages)]
    if compression:  # (a compressed 16 MiB message of repeated bytes comes in one read)
        return
    # The 16 MiB messages were forwarded as pieces, each way, not held whole.
    big = [p for p in recorder.pieces if p[2] > 0 and not p[3]]
    assert {(p[0], p[1]) for p in big} == {("client", True), ("client", False),
                                           ("server", True), ("server", False)}
    assert max(p[2] for p in recorder.pieces) < 4 * 1024 * 1024


class Rewriter:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool, bytes]] = []

    async def on_websocket_message(self, flow: Any, message: Any) -> None:
        self.seen.append((message.direction, message.is_text, message.content))
        if not message.from_client:
            return
        if message.text == "secret":
            message.text = "rewritten"
        elif message.content == b"drop me":
            message.drop()
        elif message.text == "inject":
            flow.websocket.inject("hello client", to_client=True)
            flow.websocket.inject(b"hello server", to_client=False)  # echoed back
            await asyncio.sleep(0.05)  # (the injected ones still go after this message)


@pytest.mark.parametrize("tls", [False, True])
def test_a_plugin_rewrites_drops_and_injects(start_proxy, origin_ca, tls):
    """In each I/O mode (the loop's transports, uvloop, anyio's streams)."""
    rewriter = Rewriter()

    async def scenario() -> None:
        server_tls = tls_origin_context(origin_ca) if tls else None
        async with echo_server(server_tls) as (port, closes):
            async with client(proxy, port, tls=tls) as ws:
                await ws.send("secret")
                assert await ws.recv() == "rewritten"
                await ws.send(["sec", "r", "et"])  # fragmented: the hook sees it whole
                assert await ws.recv() == "rewritten"
                await ws.send(b"drop me")
                await ws.send("inject")
                received = {await ws.recv(), await ws.recv(), await ws.recv()}
                assert received == {"inject", "hello client", b"hello server"}
                big = payload(64 * 1024, False)
                await ws.send(big)
                assert await ws.recv() == big
                await ws.send("close 4002")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == \
                    (4002, "server says bye")
            await wait_for(lambda: closes)
            assert closes == [(4002, "server says bye")]

    with start_proxy(plugins=[rewriter]) as proxy:
        asyncio.run(scenario())
    client_sent = [content for direction, _, content in rewriter.seen if direction == "client"]
    assert client_sent[:4] == [b"secret", b"secret", b"drop me", b"inject"]
    # The server echoed only what reached it: the rewritten text, not the dropped message.
    server_sent = [content for direction, _, content in rewriter.seen if direction == "server"]
    assert server_sent[:4] == [b"rewritten", b"rewritten", b"inject", b"hello server"]
    assert ("server", True, b"rewritten") in rewriter.seen


def test_a_message_past_the_buffer_limit_streams_past_the_hook(make_proxy):
    seen: list[tuple[bool, int]] = []

    class Hook:
        def on_websocket_message(self, flow: Any, message: Any) -> None:
            seen.append((message.streamed, len(message.content)))
            if message.streamed and message.from_client:
                # Sent to the server while the big message streams there: after it.
                flow.websocket.inject("after it", to_client=False)

    async def scenario() -> None:
        async with echo_server(compression=None) as (port, _), \
                client(proxy, port, compression=None) as ws:
            big = payload(16 * 1024 * 1024, False)
            await ws.send(big)
            assert await ws.recv() == big
            assert await ws.recv() == "after it"  # (echoed)
            await ws.send(payload(1000, False))
            assert await ws.recv() == payload(1000, False)

    with make_proxy(plugins=[Hook()], config={"proxy": {"body_buffer_limit": 1 << 20}}) \
            as proxy:
        asyncio.run(scenario())
    # (the injected message does not reach the hook; its echo does)
    assert [s for s, _ in seen] == [True, True, False, False, False]
    # The hook saw the start (the limit and at most one more read), not 16 MiB.
    assert all(1 << 20 < size <= (1 << 20) + 256 * 1024 for _, size in seen[:2])
    assert [size for _, size in seen[2:]] == [8, 1000, 1000]


def test_the_opaque_relay_is_kept_when_nothing_needs_messages(make_proxy):
    ended: list[tuple[bool, int | None]] = []

    class Ends:
        def on_websocket_end(self, flow: Any) -> None:
            ended.append((flow.websocket.parsed, flow.websocket.close_code))

    async def scenario() -> None:
        async with echo_server() as (port, closes):
            async with client(proxy, port) as ws:
                await ws.send("through")
                assert await ws.recv() == "through"
                await ws.close(4001, "bye")
            await wait_for(lambda: closes and ended)
            assert closes == [(4001, "bye")]

    with make_proxy(plugins=[Ends()]) as proxy:
        asyncio.run(scenario())
    assert ended == [(False, None)]


def test_injecting_into_a_closed_connection_is_an_error(make_proxy):
    flows: list[Any] = []

    class Keep:
        def on_websocket_start(self, flow: Any) -> None:
            flow.websocket.inject("welcome", to_client=True)  # parsed because of this
            flows.append(flow)

    async def scenario() -> None:
        async with echo_server() as (port, _):
            async with client(proxy, port) as ws:
                assert await ws.recv() == "welcome"
            await wait_for(lambda: flows and flows[0].websocket.timestamp_end)

    with make_proxy(plugins=[Keep()]) as proxy:
        asyncio.run(scenario())
    ws = flows[0].websocket
    assert ws.parsed and not ws.open
    assert (ws.close_code, ws.closed_by_client) == (1000, True)
    with pytest.raises(RuntimeError, match="not open"):
        ws.inject("late", to_client=True)


def test_an_absolute_form_upgrade_is_parsed_and_pings_pass(make_proxy):
    """``GET ws-origin-url`` straight to the proxy (no CONNECT), a wsproto client on a socket:
    a ping reaches the server and its pong comes back; the close code goes through."""
    import socket

    import wsproto
    import wsproto.events as ev

    rewriter = Rewriter()

    def exchange(port: int, proxy_port: int) -> list[Any]:
        conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        got: list[Any] = []
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
            sock.sendall(conn.send(ev.Request(host=f"127.0.0.1:{port}",
                                              target=f"http://127.0.0.1:{port}/chat")))
            sent = False
            for _ in range(100):  # bounded: a handful of reads is enough
                data = sock.recv(65536)
                conn.receive_data(data or None)
                for event in conn.events():
                    got.append(event)
                    if isinstance(event, ev.AcceptConnection) and not sent:
                        sock.sendall(conn.send(ev.TextMessage("secret")) +
                                     conn.send(ev.Ping(b"are you there")))
                        sent = True
                    elif isinstance(event, ev.Pong | ev.TextMessage) and \
                            {type(e) for e in got} >= {ev.Pong, ev.TextMessage}:
                        sock.sendall(conn.send(ev.CloseConnection(4003, "raw client")))
                    elif isinstance(event, ev.CloseConnection):
                        return got
                if not data:
                    return got
        return got

    async def scenario() -> list[Any]:
        async with echo_server(compression=None) as (port, closes):
            got = await asyncio.to_thread(exchange, port, proxy.port)
            await wait_for(lambda: closes)
            assert closes == [(4003, "raw client")]
            return got

    with make_proxy(plugins=[rewriter]) as proxy:
        got = asyncio.run(scenario())
    kinds = [type(event).__name__ for event in got]
    assert kinds[0] == "AcceptConnection" and kinds[-1] == "CloseConnection", kinds
    assert sorted(kinds[1:-1]) == ["Pong", "TextMessage"], kinds  # (the pong may come first)
    assert [e.data for e in got if isinstance(e, ev.TextMessage)] == ["rewritten"]
    assert [e.payload for e in got if isinstance(e, ev.Pong)] == [b"are you there"]
    assert (got[-1].code, got[-1].reason) == (4003, "raw client")
