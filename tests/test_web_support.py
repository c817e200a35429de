"""Helpers of the web API tests (no tests here): the inspector served for real on 127.0.0.1
(``serve_web`` on port 0, in a thread with its own event loop), flow records to fill a store
with, and a small WebSocket client on wsproto (hypercorn's own WebSocket library)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.from_thread
import httpx
import wsproto
import wsproto.events as ws

from nectoproxy.store import FlowRecord, SQLiteStore, new_flow_id
from nectoproxy.web import create_app, serve_web

TOKEN = "s3cret-t0ken"
TIMEOUT = 30.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(**fields: Any) -> FlowRecord:
    """A finished GET flow; ``fields`` override any attribute."""
    url = fields.pop("url", "https://api.example.test/v1/items?page=2")
    values: dict[str, Any] = {
        "id": new_flow_id(), "scheme": url.split(":", 1)[0], "method": "GET", "url": url,
        "host": "api.example.test", "port": 443, "path": "/v1/items", "status": 200,
        "reason": "OK", "request_headers": [("Host", "api.example.test"), ("Accept", "*/*")],
        "response_headers": [("Content-Type", "application/json")],
        "content_type": "application/json", "request_size": 0, "response_size": 2,
        "started_at": time.time(), "duration": 12.5,
        "timings": {"connect": 1.0, "tls_handshake": 3.0, "first_byte": 10.0,
                    "complete": 12.5},
    }
    values.update(fields)
    return FlowRecord(**values)


class WebServer:
    """The inspector over a store in ``directory``, served until the block ends."""

    def __init__(self, directory: Path, *, allowed_hosts: Sequence[str] = (),
                 replayer: Any = None, status: Callable[[], Mapping[str, Any]] | None = None,
                 store: SQLiteStore | None = None) -> None:
        self.store = store or SQLiteStore(directory / "flows.db")
        self.owns_store = store is None
        self.session = self.store.start_run()
        self.app = create_app(self.store, token=TOKEN, allowed_hosts=allowed_hosts,
                              replayer=replayer, status=status)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        try:
            portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
            self.future, (self.host, self.port) = portal.start_task(
                serve_web, self.app, "127.0.0.1", 0)
            self._stack.callback(self._stop)
        except BaseException:
            self._stack.close()
            raise
        return self

    def _stop(self) -> None:
        self.future.cancel()
        with contextlib.suppress(BaseException):
            self.future.result(TIMEOUT)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()
        if self.owns_store:
            self.store.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = TOKEN, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT,
                            trust_env=False, **kwargs)

    def save(self, body_request: bytes | None = None, body_response: bytes | None = None,
             **fields: Any) -> FlowRecord:
        return self.store.save_flow(record(**fields), body_request, body_response)


class WsClient:
    """A blocking WebSocket client over a plain socket: enough for the event socket."""

    def __init__(self, port: int, target: str, headers: Sequence[tuple[str, str]] = (),
                 host: str | None = None, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:  # before connecting, so the window starts small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        self.conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.events: list[ws.Event] = []
        self.rejected: ws.RejectConnection | None = None
        self.reject_body = b""
        self.closed: ws.CloseConnection | None = None
        self._text: list[str] = []
        self._send(ws.Request(host=host or f"127.0.0.1:{port}", target=target,
                              extra_headers=[(k.encode(), v.encode()) for k, v in headers]))
        event = self._next_event(TIMEOUT)
        if isinstance(event, ws.RejectConnection):
            self.rejected = event
            for _ in range(1000):  # the refusal's body, in a few pieces at most
                if not event.has_body:
                    break
                data = self._next_event(TIMEOUT)
                assert isinstance(data, ws.RejectData), data
                self.reject_body += data.data
                if data.body_finished:
                    break
        else:
            assert isinstance(event, ws.AcceptConnection), f"no handshake answer: {event!r}"

    def _send(self, event: ws.Event) -> None:
        self.sock.sendall(self.conn.send(event))

    def _next_event(self, timeout: float) -> ws.Event | None:
        deadline = time.monotonic() + timeout
        while not self.events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                return None
            self.conn.receive_data(data or None)
            self.events.extend(self.conn.events())
            if not data and not self.events:
                raise ConnectionError("the server closed the connection")
        return self.events.pop(0)

    def message(self, timeout: float = TIMEOUT) -> dict[str, Any] | None:
        """The next JSON message, or None (timeout, or the server closed: see ``closed``)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._next_event(max(0.0, deadline - time.monotonic()))
            if event is None:
                return None
            if isinstance(event, ws.TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    return dict(json.loads(text))
            elif isinstance(event, ws.CloseConnection):
                self.closed = event
                with contextlib.suppress(OSError, wsproto.utilities.LocalProtocolError):
                    self._send(event.response())
                return None
            elif isinstance(event, ws.Ping):
                self._send(event.response())

    def messages_until(self, done: Callable[[dict[str, Any]], bool],
                       timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Messages until one makes ``done`` true (included); fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            message = self.message(deadline - time.monotonic())
            if message is None:
                break
            got.append(message)
            if done(message):
                return got
        raise AssertionError(f"no matching message in {timeout} s; got {got[-5:]}")

    def send_json(self, data: Any) -> None:
        self._send(ws.Message(data=json.dumps(data)))

    def close(self) -> None:
        with contextlib.suppress(OSError, wsproto.utilities.LocalProtocolError):
            self._send(ws.CloseConnection(code=1000))
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(predicate: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Poll ``predicate`` until it returns something true (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def iter_chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]
