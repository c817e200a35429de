"""The inspector's gate: the token, the Host check against DNS rebinding, same-origin only.

A pure ASGI middleware in front of everything (cheap: a few header comparisons per request):

- **Host.** The ``Host`` header must name this machine: ``localhost``, a loopback or
  unspecified address, an address of the host name or of the connection's own end, or an
  entry of ``allowed_hosts`` (``name`` for any port, ``name:port`` for one). A page served by
  a rebound DNS name carries that name, and is refused with 403.
- **Origin.** A request that carries ``Origin`` (browsers add it to cross-origin calls, to
  every non-GET call, and to WebSocket handshakes) must come from the same origin as its
  ``Host``, or from an ``allowed_hosts`` entry. No CORS headers are ever sent.
- **Token.** Everything except ``/api/health`` needs ``Authorization: Bearer <token>`` or the
  ``nectoproxy_token`` cookie; the event socket also takes ``?token=`` (browsers cannot set
  WebSocket headers). A GET of a page (not under ``/api/``) with ``?token=`` sets the cookie
  (HttpOnly, SameSite=Strict) and redirects to the same URL without it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import anyio
import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("nectoproxy.web")

COOKIE = "nectoproxy_token"
OPEN_PATHS = frozenset({"/api/health"})
#: Added to every answer: no sniffing, no framing, no referrer (page URLs may hold ?token=).
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def split_authority(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (IPv6 in brackets) -> (lower-case host, port or None); None if malformed."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") > 1:  # a bare IPv6 address
        host, port_text = value, None
    else:
        host, _, port_text = value.partition(":")
        port_text = port_text if ":" in value else None
    if port_text is not None and not (port_text.isdigit() and int(port_text) < 65536):
        return None
    host = host.lower().rstrip(".")
    if not host:
        return None
    return host, None if port_text is None else int(port_text)


def _ip(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def machine_names() -> tuple[set[str], set[IPAddress]]:
    """The host name and its addresses (blocking: name resolution; call it in a thread)."""
    names = {"localhost"}
    addresses: set[IPAddress] = set()
    try:
        hostname = socket.gethostname().lower().rstrip(".")
    except OSError:  # pragma: no cover - a machine without a host name
        return names, addresses
    if hostname:
        names.add(hostname)
        try:
            infos = socket.getaddrinfo(hostname, None, type=socket.SOCK_STREAM)
        except OSError:
            infos = []
        for *_, sockaddr in infos:
            address = _ip(str(sockaddr[0]))
            if address is not None:
                addresses.add(address)
    return names, addresses


class HostRules:
    """Which Host (and Origin) values name this inspector."""

    def __init__(self, allowed_hosts: Iterable[str]) -> None:
        self.allowed: list[tuple[str, int | None]] = []
        for entry in allowed_hosts:
            parsed = split_authority(entry)
            if parsed is None:
                raise ValueError(f"allowed_hosts: {entry!r} is not a host name or host:port")
            self.allowed.append(parsed)
        self.names: set[str] = {"localhost"}
        self.addresses: set[IPAddress] = set()
        self._collected = False
        self._lock = anyio.Lock()

    async def collect(self) -> None:
        """Learn the machine's names once (in a thread: resolving may be slow)."""
        if self._collected:
            return
        async with self._lock:
            if not self._collected:
                names, addresses = await anyio.to_thread.run_sync(machine_names)
                self.names |= names
                self.addresses |= addresses
                self._collected = True

    def is_allowed_entry(self, host: str, port: int | None) -> bool:
        return any(name == host and (want is None or want == port) for name, want in self.allowed)

    def is_local(self, host: str, port: int | None, server: str | None) -> bool:
        if host in self.names or self.is_allowed_entry(host, port):
            return True
        address = _ip(host)
        if address is None:
            return False
        return (address.is_loopback or address.is_unspecified or address in self.addresses
                or (server is not None and address == _ip(server)))


def _headers(scope: Scope) -> dict[str, str]:
    """Header values by lower-case name (repeated ones joined, cookies with "; ")."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in found:
            found[name] += ("; " if name == "cookie" else ", ") + value
        else:
            found[name] = value
    return found


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return unquote(value.strip().strip('"'))
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(origin: str) -> tuple[str, str, int] | None:
    """An Origin header as (scheme, host, port); None for "null" and anything not http(s)."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return (parts.scheme, parts.hostname.lower().rstrip("."),
            _DEFAULT_PORTS[parts.scheme] if port is None else port)


class Guard:
    """The middleware; ``token`` must not be empty."""

    def __init__(self, app: ASGIApp, *, token: str, allowed_hosts: Sequence[str] = ()) -> None:
        if not token:
            raise ValueError("the inspector needs a token")
        self.app = app
        self._token = token.encode("utf-8")
        self.rules = HostRules(allowed_hosts)

    def _token_ok(self, candidate: bytes | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate, self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await self.rules.collect()
        headers = _headers(scope)
        refusal = self._check(scope, kind, headers)
        if refusal is not None:
            status, message = refusal
            log.debug("refused %s %s: %s", kind, scope.get("path"), message)
            await _refuse(scope, send, status, message)
            return
        if kind == "http" and self._sets_cookie(scope):
            await _redirect_setting_cookie(scope, send, self._token.decode("utf-8"))
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if b"cache-control" not in present:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _check(self, scope: Scope, kind: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, reason) of a refusal, or None to let the request in."""
        host = split_authority(headers.get("host", ""))
        server = scope.get("server")
        server_host = str(server[0]) if server else None
        if host is None:
            return 403, "a Host header naming this machine is required"
        if not self.rules.is_local(host[0], host[1], server_host):
            return 403, (f"Host {headers['host']!r} is not this machine; add it to [web] "
                         "allowed_hosts to use that name")
        origin = headers.get("origin")
        if origin is not None:
            scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
            found = _origin(origin)
            same = found == (scheme, host[0], host[1] or _DEFAULT_PORTS[scheme])
            if not same and not (found and self.rules.is_allowed_entry(found[1], found[2])):
                return 403, f"cross-origin requests are refused (Origin {origin!r})"
        if scope["path"] in OPEN_PATHS and kind == "http":
            return None
        bearer = headers.get("authorization", "")
        scheme, _, credentials = bearer.partition(" ")
        # Header values are latin-1 text here (ASGI): back to their bytes; the cookie and the
        # query are percent-encoded UTF-8.
        if scheme.lower() == "bearer" and self._token_ok(credentials.strip().encode("latin-1")):
            return None
        if self._token_ok(_utf8(_cookie(headers.get("cookie", ""), COOKIE))):
            return None
        if (kind == "websocket" or self._sets_cookie(scope)) and self._token_ok(
                _utf8(_query_token(scope))):
            return None
        return 401, ("a token is required: Authorization: Bearer <token>, or open the URL with "
                     "?token= that NectoProxy printed when it started")

    def _sets_cookie(self, scope: Scope) -> bool:
        """A page visit with ``?token=``: answered with the cookie and a redirect."""
        return (scope["type"] == "http" and scope.get("method") in ("GET", "HEAD")
                and not (scope["path"] == "/api" or scope["path"].startswith("/api/"))
                and _query_token(scope) is not None)


def _utf8(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogateescape")


def _query_token(scope: Scope) -> str | None:
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "token":
            return str(value)
    return None


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"),
               *SECURITY_HEADERS]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="NectoProxy"'))
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def _redirect_setting_cookie(scope: Scope, send: Send, token: str) -> None:
    query = scope.get("query_string", b"").decode("latin-1")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "token"]
    location = quote(scope.get("root_path", "") + scope["path"])
    if kept:
        location += "?" + urlencode(kept)
    cookie = f"{COOKIE}={quote(token, safe='')}; HttpOnly; SameSite=Strict; Path=/"
    headers = [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode()),
               (b"content-length", b"0"), (b"cache-control", b"no-store"), *SECURITY_HEADERS]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
