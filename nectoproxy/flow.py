"""The objects plugins receive and may change: Headers, Request, Response, Flow, Connection.

They are plain data: the engine builds them from what h11 parsed, hands them to the hooks, and
sends whatever the hooks left behind. Nothing in here does I/O.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio

from nectoproxy import encoding

if TYPE_CHECKING:
    from nectoproxy.websocket import WebSocketData

HeaderFields = Iterable[tuple[str, str]]


class _MultiDict(MutableMapping[str, str]):
    """An ordered list of (name, value) pairs seen as a mapping; names may repeat."""

    __slots__ = ("_fields",)

    def __init__(
        self,
        fields: HeaderFields | Mapping[str, str] | None = None,
        **kwargs: str,
    ) -> None:
        if isinstance(fields, Mapping):
            fields = fields.items()
        self._fields: list[tuple[str, str]] = [(str(k), str(v)) for k, v in fields or ()]
        self._fields.extend(kwargs.items())

    @property
    def fields(self) -> list[tuple[str, str]]:
        """The (name, value) pairs in order. Assign a new list to replace them all."""
        return self._fields

    @fields.setter
    def fields(self, value: list[tuple[str, str]]) -> None:
        self._fields = value
        self._changed()

    def _key(self, name: str) -> str:
        return name

    def _changed(self) -> None:
        """Called after every mutation; views bound to something else write back here."""

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order (an empty list if there is none)."""
        key = self._key(name)
        return [v for k, v in self.fields if self._key(k) == key]

    def set_all(self, name: str, values: Iterable[str]) -> None:
        """Replace every value of ``name``, keeping the position of its first occurrence."""
        key = self._key(name)
        values = [str(v) for v in values]
        new: list[tuple[str, str]] = []
        inserted = False
        for k, v in self.fields:
            if self._key(k) != key:
                new.append((k, v))
            elif not inserted:
                new.extend((k, value) for value in values)
                inserted = True
        if not inserted:
            new.extend((name, value) for value in values)
        self.fields = new

    def add(self, name: str, value: str) -> None:
        """Append one more value for ``name`` (``set-cookie`` style)."""
        self.fields.append((name, str(value)))
        self._changed()

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return self._join(values)

    def _join(self, values: list[str]) -> str:
        return values[0]

    def __setitem__(self, name: str, value: str) -> None:
        self.set_all(name, [value])

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self.set_all(name, [])

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = self._key(name)
        return any(self._key(k) == key for k, _ in self.fields)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for k, _ in self.fields:
            key = self._key(k)
            if key not in seen:
                seen.add(key)
                yield k

    def __len__(self) -> int:
        return len({self._key(k) for k, _ in self.fields})

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _MultiDict):
            return self.fields == other.fields
        return NotImplemented

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.fields!r})"


class Headers(_MultiDict):
    """HTTP header fields: case-insensitive, order-preserving and multi-valued.

    ``headers["Accept"]`` joins repeated fields with ", " (as RFC 9110 allows for list-valued
    fields); use :meth:`get_all` for ``Set-Cookie`` and friends. The original case of each name
    is kept and sent on the wire.
    """

    __slots__ = ("_edits", "_parsed", "_snapshot")

    def __init__(
        self,
        fields: HeaderFields | Mapping[str, str] | None = None,
        **kwargs: str,
    ) -> None:
        super().__init__(fields, **kwargs)
        #: How many changes were made through this object (compared to tell a plugin changed
        #: it, without copying the fields).
        self._edits = 0
        #: h11's already-validated header object while nothing has changed the fields: h11
        #: sends it without validating every name and value again (the proxy's hot path).
        self._parsed: Any = None
        self._snapshot: list[tuple[str, str]] = []

    def _changed(self) -> None:
        self._parsed = None
        self._edits += 1

    def _key(self, name: str) -> str:
        return name.lower()

    def _join(self, values: list[str]) -> str:
        return ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for k, v in self._fields if k.lower() == key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return any(k.lower() == key for k, _ in self._fields)

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        """Build from the (name, value) byte pairs h11 produces."""
        headers = cls()
        headers._fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
        return headers

    @classmethod
    def from_h11(cls, parsed: Any) -> Headers:
        """Build from a parsed h11 header object, remembering it while nothing changes."""
        headers = cls.from_raw(parsed.raw_items())
        if isinstance(getattr(parsed, "_full_items", None), list):
            headers._parsed = parsed
            headers._snapshot = list(headers._fields)
        return headers

    def without(self, names: AbstractSet[str]) -> None:
        """Remove every field named in ``names`` (lower-case), keeping the parsed form."""
        parsed = self._parsed
        self.fields = [(k, v) for k, v in self._fields if k.lower() not in names]
        if parsed is not None:
            # Dropping fields cannot make the rest invalid: keep h11's checked form in step.
            items = [item for item in parsed._full_items if item[1].decode("latin-1") not in names]
            self._parsed = type(parsed)(items)
            self._snapshot = list(self._fields)

    def to_raw(self) -> list[tuple[bytes, bytes]]:
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self._fields]

    def to_h11(self) -> Any:
        """What to give h11 to send: its own checked object if unchanged, else the pairs.

        "Unchanged" is checked against a snapshot, so even in-place edits of ``fields`` are
        seen and validated by h11 like any other change.
        """
        if self._parsed is not None and self._fields == self._snapshot:
            return self._parsed
        return self.to_raw()

    def copy(self) -> Headers:
        return Headers(self.fields)


class Query(_MultiDict):
    """The query parameters of a request; changing them rewrites ``request.path``."""

    __slots__ = ("_request",)

    def __init__(self, request: Request) -> None:
        super().__init__(parse_qsl(request.query_string, keep_blank_values=True))
        self._request = request

    def _changed(self) -> None:
        self._request.query_string = urlencode(self.fields)


_CHARSET = re.compile(r"charset=[\"']?([\w.-]+)", re.IGNORECASE)


class Message:
    """What requests and responses share: headers, a body, an HTTP version."""

    def __init__(
        self,
        headers: Headers,
        raw_content: bytes | None,
        http_version: str,
    ) -> None:
        self.headers = headers
        #: The body as sent on the wire (Content-Encoding applied), or None while it streams.
        self.raw_content: bytes | None = raw_content
        self.http_version = http_version
        #: Trailer fields of a chunked body, if the peer sent any.
        self.trailers: Headers | None = None
        #: Functions applied to each chunk of the body as it is sent (sync or async); see
        #: "Streaming" in docs/plugins.md. They may delay (throttling) or change the chunks.
        self.chunk_filters: list[Callable[[bytes], Any]] = []
        #: Set True when the filters never change the body's size (pacing): Content-Length is
        #: then kept instead of switching to chunked framing.
        self.filters_keep_length = False

    @property
    def streamed(self) -> bool:
        """True when the body is relayed as it arrives instead of being buffered.

        Plugins then see the headers only; ``raw_content`` and ``content`` are None.
        """
        return self.raw_content is None

    @property
    def content(self) -> bytes | None:
        """The body with its Content-Encoding undone (gzip, deflate, br when available).

        Setting it re-applies the same encoding, or drops the Content-Encoding header when the
        encoding cannot be applied here.
        """
        if self.raw_content is None:
            return None
        coding = self.headers.get("content-encoding", "")
        if not coding:
            return self.raw_content
        try:
            return encoding.decode(self.raw_content, coding)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"cannot decode body with Content-Encoding {coding!r}: {exc}") from exc

    @content.setter
    def content(self, value: bytes) -> None:
        coding = self.headers.get("content-encoding", "")
        if coding and encoding.can_encode(coding):
            self.raw_content = encoding.encode(value, coding)
        else:
            if coding:
                del self.headers["content-encoding"]
            self.raw_content = value
        self._body_changed()

    def _body_changed(self) -> None:
        if "content-length" in self.headers and self.raw_content is not None:
            self.headers["content-length"] = str(len(self.raw_content))

    @property
    def charset(self) -> str:
        match = _CHARSET.search(self.headers.get("content-type", ""))
        return match.group(1) if match else "utf-8"

    @property
    def text(self) -> str | None:
        """The decoded body as text (charset from Content-Type, default UTF-8)."""
        content = self.content
        if content is None:
            return None
        return content.decode(self.charset, errors="replace")

    @text.setter
    def text(self, value: str) -> None:
        self.content = value.encode(self.charset, errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError if it is not JSON or is streamed)."""
        content = self.content
        if content is None:
            raise ValueError("the body is streamed, not buffered")
        return json.loads(content)


def split_host_port(authority: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` / ``host``; raise ValueError on anything else."""
    authority = authority.strip()
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"unterminated IPv6 literal in {authority!r}")
        host, rest = authority[1:end], authority[end + 1 :]
        ipaddress.IPv6Address(host.split("%")[0])
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after IPv6 literal in {authority!r}")
        port_text = rest[1:] if rest else ""
    elif authority.count(":") > 1:
        raise ValueError(f"IPv6 literals must be bracketed: {authority!r}")
    else:
        host, _, port_text = authority.partition(":")
        if ":" in authority and not port_text:
            raise ValueError(f"empty port in {authority!r}")
    if not host or not _HOST_CHARS.fullmatch(host):
        raise ValueError(f"invalid host in {authority!r}")
    if not port_text:
        if default_port is None:
            raise ValueError(f"missing port in {authority!r}")
        return host.lower(), default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port in {authority!r}")
    return host.lower(), int(port_text)


_HOST_CHARS = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def format_authority(host: str, port: int, scheme: str | None = None) -> str:
    """``host:port`` with IPv6 bracketed and the scheme's default port left out."""
    shown = f"[{host}]" if ":" in host else host
    if scheme is not None and _DEFAULT_PORTS.get(scheme) == port:
        return shown
    return f"{shown}:{port}"


class Request(Message):
    """An HTTP request as the client sent it (or as plugins changed it).

    ``path`` is the request target in origin form, query string included (``/a/b?x=1``);
    ``pathname`` is the part before ``?`` and ``query`` the parameters as a mutable view.
    Changing ``url``, ``host``, ``port`` or ``scheme`` changes where the request is sent.
    """

    def __init__(
        self,
        method: str,
        scheme: str,
        host: str,
        port: int,
        path: str,
        headers: Headers | None = None,
        raw_content: bytes | None = b"",
        http_version: str = "HTTP/1.1",
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), raw_content, http_version)
        self.method = method
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path

    @classmethod
    def make(
        cls,
        method: str,
        url: str,
        content: bytes | str = b"",
        headers: HeaderFields | Mapping[str, str] | None = None,
    ) -> Request:
        """Build a request from a URL, e.g. in a test or a plugin that sends its own."""
        request = cls(method, "http", "", 80, "/", Headers(headers))
        request.url = url
        body = content.encode() if isinstance(content, str) else content
        request.raw_content = body
        if body and "content-length" not in request.headers:
            request.headers["Content-Length"] = str(len(body))
        if "host" not in request.headers:
            request.headers["Host"] = request.authority
        return request

    @property
    def authority(self) -> str:
        """``host[:port]`` as it belongs in a Host header (default port left out)."""
        return format_authority(self.host, self.port, self.scheme)

    @property
    def url(self) -> str:
        if self.method == "CONNECT":
            return format_authority(self.host, self.port)
        if self.path == "*":
            return f"{self.scheme}://{self.authority}"
        return f"{self.scheme}://{self.authority}{self.path}"

    @url.setter
    def url(self, value: str) -> None:
        parts = urlsplit(value)
        if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
            raise ValueError(f"not an absolute http(s) URL: {value!r}")
        host, port = split_host_port(parts.netloc.rpartition("@")[2], _DEFAULT_PORTS[parts.scheme])
        self.scheme, self.host, self.port = parts.scheme, host, port
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    @property
    def pathname(self) -> str:
        return self.path.partition("?")[0]

    @property
    def query_string(self) -> str:
        return self.path.partition("?")[2]

    @query_string.setter
    def query_string(self, value: str) -> None:
        self.path = self.pathname + (f"?{value}" if value else "")

    @property
    def query(self) -> Query:
        """The query parameters; ``request.query["a"] = "1"`` rewrites the path."""
        return Query(self)

    @query.setter
    def query(self, value: HeaderFields | Mapping[str, str]) -> None:
        items = value.items() if isinstance(value, Mapping) else value
        self.query_string = urlencode(list(items))

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


_REASONS: dict[int, str] = {}


def reason_phrase(status: int) -> str:
    if not _REASONS:
        from http import HTTPStatus

        _REASONS.update({s.value: s.phrase for s in HTTPStatus})
    return _REASONS.get(status, "")


class Response(Message):
    """An HTTP response from the origin, or one a plugin made with :meth:`make`."""

    def __init__(
        self,
        status_code: int,
        headers: Headers | None = None,
        raw_content: bytes | None = b"",
        http_version: str = "HTTP/1.1",
        reason: str | None = None,
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), raw_content, http_version)
        self.status_code = status_code
        self.reason = reason if reason is not None else reason_phrase(status_code)

    @classmethod
    def make(
        cls,
        status_code: int = 200,
        content: bytes | str | dict[str, Any] | list[Any] = b"",
        headers: HeaderFields | Mapping[str, str] | None = None,
    ) -> Response:
        """A complete response, for plugins that answer a request themselves.

        ``str`` bodies are sent as UTF-8 ``text/plain``, ``dict``/``list`` as JSON, unless
        ``headers`` sets a Content-Type. Content-Length is always set.
        """
        hdrs = Headers(headers)
        if isinstance(content, (dict, list)):
            body = json.dumps(content).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(content, str):
            body = content.encode()
            hdrs.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            body = content
        hdrs["Content-Length"] = str(len(body))
        return cls(status_code, hdrs, body)

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.reason}>"


@dataclass
class TLSInfo:
    """What the client's TLS handshake with the proxy negotiated."""

    sni: str | None = None
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None


@dataclass(slots=True)
class ServerTLSInfo:
    """What the proxy's TLS handshake with the origin negotiated, and the origin's certificate.

    ``certificate`` is the leaf in DER form; ``subject``, ``issuer`` and ``not_after`` read it
    once, on first use (most flows never need them; the flows of one connection share them).
    """

    sni: str | None = None
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    certificate: bytes | None = None
    _names: tuple[str | None, str | None, str | None] | None = None

    def _read(self) -> tuple[str | None, str | None, str | None]:
        if self._names is None:
            self._names = (None, None, None)
            if self.certificate:
                from cryptography import x509

                try:
                    cert = x509.load_der_x509_certificate(self.certificate)
                    self._names = (cert.subject.rfc4514_string(),
                                   cert.issuer.rfc4514_string(),
                                   cert.not_valid_after_utc.isoformat())
                except ValueError:
                    pass
        return self._names

    @property
    def subject(self) -> str | None:
        return self._read()[0]

    @property
    def issuer(self) -> str | None:
        return self._read()[1]

    @property
    def not_after(self) -> str | None:
        """The certificate's expiry, ISO 8601 in UTC."""
        return self._read()[2]


_connection_ids = itertools.count(1)
_id_prefix = os.urandom(8).hex()
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_id() -> str:
    """A new flow id, 32 hex digits: random per process, then counted (no system call and no
    UUID object per flow; unique across processes and restarts)."""
    return f"{_id_prefix}{next(_id_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


@dataclass(slots=True)
class Connection:
    """A client connection; handed to ``on_connect`` once when it opens and once per CONNECT.

    For a CONNECT, ``target`` is the (host, port) the client asked for (a SOCKS CONNECT's
    too; in reverse mode, the origin's). A plugin may :meth:`refuse` it, or set ``intercept =
    False`` to relay the TLS bytes untouched. ``mode`` is how the client came in: "regular",
    "reverse" or "socks5" (see docs/modes.md).
    """

    client_address: tuple[str, int]
    mode: str = "regular"
    id: int = field(default_factory=lambda: next(_connection_ids))
    target: tuple[str, int] | None = None
    intercept: bool = True
    tls: TLSInfo | None = None
    refused: tuple[int, str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp_start: float = field(default_factory=time.time)

    def refuse(self, status: int = 403, reason: str = "refused by a plugin") -> None:
        """Answer the client ``status`` with ``reason`` as text and close the connection."""
        self.refused = (status, reason)


class Flow:
    """One request/response exchange and everything known about it."""

    def __init__(self, connection: Connection, request: Request) -> None:
        self._id: str | None = None
        self.connection = connection
        self.request = request
        #: Set by the engine when the origin answers, or by a plugin in ``on_request`` to answer
        #: the request itself (the origin is then never contacted).
        self.response: Response | None = None
        #: Why the flow failed (upstream error, client gone, killed), or None.
        self.error: str | None = None
        #: Free-form data plugins share with each other (and with themselves between hooks).
        self.metadata: dict[str, Any] = {}
        #: The (ip, port) of the origin the request went to, once connected.
        self.server_address: tuple[str, int] | None = None
        self.killed = False
        self.kill_reason = "killed by a plugin"
        #: Whether the flow waits to be resumed (see :meth:`intercept`).
        self.intercepted = False
        self._resumed: anyio.Event | None = None
        #: Body bytes relayed each way (after any plugin changes), filled in as they are sent.
        self.request_body_size = 0
        self.response_body_size = 0
        self.timestamp_start = time.time()
        self.timestamp_request_end: float | None = None
        #: When the origin connection this flow used was ready (TCP and TLS); for a connection
        #: opened for this flow, also when its TCP connect and its TLS handshake ended.
        self.timestamp_connected: float | None = None
        self.timestamp_tcp_connected: float | None = None
        self.timestamp_tls_established: float | None = None
        self.timestamp_request_sent: float | None = None
        self.timestamp_response_start: float | None = None
        self.timestamp_end: float | None = None
        #: The header fields exactly as received (order, case, hop-by-hop ones included),
        #: before the engine or any plugin changed them; the response's once it arrived.
        self.received_request_headers: list[tuple[str, str]] = []
        self.received_response_headers: list[tuple[str, str]] | None = None
        #: The origin TLS connection's details (None for plain HTTP or before connecting).
        self.server_tls: ServerTLSInfo | None = None
        #: Functions called as ``tap(direction, chunk)`` with every piece of a body as it is
        #: sent ("request" to the origin, "response" to the client), after plugins and chunk
        #: filters: the bytes on the wire, content-encoded. They observe, they must not block,
        #: and they see every byte without making the body buffer. A tap may return an
        #: awaitable to hold the body's relay until it completes (see :meth:`tap`).
        self.body_taps: list[Callable[[str, bytes | bytearray], Awaitable[None] | None]] = []
        #: Names of the plugins whose hooks changed this flow (tracked while something reads
        #: it, such as capture: ``PluginHost.track_changes``).
        self.modified_by: list[str] = []
        #: The WebSocket connection, once the flow switched to it (see nectoproxy.websocket).
        self.websocket: WebSocketData | None = None

    @property
    def id(self) -> str:
        """A unique id, 32 hex digits (made on first use: most flows never need one)."""
        if self._id is None:
            self._id = new_id()
        return self._id

    @id.setter
    def id(self, value: str) -> None:
        self._id = value

    @property
    def client_address(self) -> tuple[str, int]:
        return self.connection.client_address

    async def tap(self, direction: str, chunk: bytes | bytearray) -> None:
        """Hand ``chunk`` to every body tap (the engine calls this). A tap that returns an
        awaitable holds the relay of this body until it is done (back-pressure: capture
        uses it when its writer falls behind)."""
        for tap in self.body_taps:
            result = tap(direction, chunk)
            if result is not None:
                await result

    def kill(self, reason: str = "killed by a plugin") -> None:
        """Drop the flow: the client connection is closed without an answer (on HTTP/2, the
        flow's stream is reset with ``CANCEL``; the connection's other streams go on).

        ``reason`` becomes ``flow.error`` (what ``on_error`` and the flow log report).
        """
        self.killed = True
        self.kill_reason = reason
        self.resume()  # (a paused flow ends now, not when it would have been resumed)

    # -- pausing (intercept / resume) --------------------------------------------------------

    def intercept(self) -> None:
        """Pause the flow: once the hook that calls this has returned (every plugin's
        implementation of it), the flow's exchange waits, and no other flow does, until
        :meth:`resume` or :meth:`kill` is called (from another task: a plugin's own API, a
        timer), or ``proxy.intercept_timeout`` has passed (then it continues, logged). What
        was changed meanwhile is what is sent, as if the hook had changed it.

        Called in ``on_request`` or ``on_response``, the flow waits right after that hook.
        Called in ``on_request_headers`` or ``on_response_headers``, it waits once that
        message's body is buffered (up to ``proxy.body_buffer_limit``) and ``on_request`` /
        ``on_response`` ran, so its body can be edited too, though no plugin asked for the
        bodies of the flows it does not pause. Call it on the event loop's thread (a hook,
        or a task on the proxy's loop)."""
        if not self.intercepted:
            self.intercepted = True
            self._resumed = anyio.Event()

    def resume(self) -> None:
        """Let a flow paused by :meth:`intercept` go on (nothing happens if it is not)."""
        self.intercepted = False
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.set()

    async def wait_for_resume(self) -> None:
        """Return once the flow is no longer paused (the engine calls this after a hook)."""
        resumed = self._resumed
        if self.intercepted and resumed is not None:
            await resumed.wait()

    def __repr__(self) -> str:
        return f"<Flow {self.request!r} -> {self.response!r}>"


@dataclass(slots=True)
class Tunnel:
    """A connection relayed untouched (pass-through TLS, or bytes that are neither TLS nor
    HTTP), handed to ``on_tunnel`` once it has ended."""

    connection: Connection
    host: str
    port: int
    #: Why it was relayed: "passthrough" (configured or decided by a plugin), or "opaque"
    #: (the client sent something that is neither TLS nor HTTP).
    reason: str = "passthrough"
    sni: str | None = None
    server_address: tuple[str, int] | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    timestamp_start: float = field(default_factory=time.time)
    timestamp_end: float | None = None
    error: str | None = None
