"""A recorded request made sendable again: edits, validation and consistent framing.

Replay and the export formats start from the request head as the proxy received it. Before it
can be sent (or written as a command) the parts that belonged to that one connection go:
hop-by-hop fields, HTTP/2 pseudo-headers, the client's proxy credentials, and the old framing
(``Content-Length`` / ``Transfer-Encoding``), which is recomputed from the body that will be
sent. Everything else keeps its order and case.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from nectoproxy import replaytag
from nectoproxy.store import FlowRecord

HeaderList = list[tuple[str, str]]

#: Fields that describe one connection (RFC 9110 7.6.1) or the old framing.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authorization", "proxy-authenticate", "content-length",
    replaytag.HEADER.lower(),
})
#: Methods whose requests carry a Content-Length even with an empty body.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


class RequestError(ValueError):
    """A replay edit that cannot be sent (a 400)."""


@dataclass(frozen=True)
class Outgoing:
    """A request to send: what it will be on the wire, apart from framing."""

    method: str
    url: str
    headers: HeaderList
    body: bytes


def authority(url: str) -> str:
    """The Host header a URL implies (its host and port, without credentials)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def from_record(record: FlowRecord, body: bytes) -> Outgoing:
    """The request as the proxy received it (plugins run again on a replay)."""
    return Outgoing(record.method, record.url, list(record.request_headers), body)


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError(f"{key} must be a string")
    return value


def check_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise RequestError(f"invalid url {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestError(f"url must be an absolute http:// or https:// URL, not {url!r}")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise RequestError("url must not contain spaces or control characters")
    return url


def parse_headers(value: Any) -> HeaderList:
    if not isinstance(value, list):
        raise RequestError("headers must be a list of [name, value] pairs")
    headers: HeaderList = []
    for item in value:
        if not (isinstance(item, list | tuple) and len(item) == 2
                and all(isinstance(part, str) for part in item)):
            raise RequestError("headers must be a list of [name, value] pairs of strings")
        name, text = item
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(text):
            raise RequestError(f"invalid header {name!r}")
        headers.append((name, text))
    return headers


def apply_edits(base: Outgoing | None, edits: Mapping[str, Any]) -> tuple[Outgoing, bool]:
    """``base`` (None: a new request) with ``edits`` applied, and whether the body was given.

    ``method``, ``url``, ``headers`` (the whole list) and ``body`` (text, sent as UTF-8) or
    ``bodyBase64`` replace the recorded ones.
    """
    unknown = set(edits) - {"method", "url", "headers", "body", "bodyBase64"}
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(sorted(unknown))}")
    method = _text(edits, "method") or (base.method if base else "GET")
    if not _TOKEN.fullmatch(method):
        raise RequestError(f"invalid method {method!r}")
    url = _text(edits, "url") or (base.url if base else None)
    if url is None:
        raise RequestError("url is required")
    check_url(url)
    text, encoded = _text(edits, "body"), _text(edits, "bodyBase64")
    if text is not None and encoded is not None:
        raise RequestError("give body or bodyBase64, not both")
    body = base.body if base else b""
    if text is not None:
        body = text.encode("utf-8")
    elif encoded is not None:
        try:
            body = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError("bodyBase64 is not valid base64") from None
    if "headers" in edits:
        headers = parse_headers(edits["headers"])
    else:
        headers = list(base.headers) if base else []
        if base is not None and url != base.url:  # the Host follows an edited URL
            headers = [(k, authority(url) if k.lower() == "host" else v) for k, v in headers]
    outgoing = Outgoing(method.upper() if method.isalpha() else method, url, headers, body)
    return outgoing, text is not None or encoded is not None


def framed_headers(request: Outgoing) -> HeaderList:
    """The header list to send ``request`` with: connection-specific fields dropped, a Host
    (from the URL if there is none), and a Content-Length that fits the body, in the place
    where the old framing was."""
    connection_tokens: set[str] = set()
    for name, value in request.headers:
        if name.lower() == "connection":
            connection_tokens |= {t.strip().lower() for t in value.split(",") if t.strip()}
    framing_at: int | None = None
    kept: HeaderList = []
    for name, value in request.headers:
        lower = name.lower()
        if lower in ("content-length", "transfer-encoding") and framing_at is None:
            framing_at = len(kept)
        if lower == "connection":
            keep = connection_tokens <= {"keep-alive", "close"}  # harmless as it is
        else:
            keep = not (lower in HOP_BY_HOP or lower in connection_tokens or name.startswith(":"))
        if keep:
            kept.append((name, value))
    if not any(name.lower() == "host" for name, _ in kept):
        kept.insert(0, ("Host", authority(request.url)))
        framing_at = None if framing_at is None else framing_at + 1
    if request.body or request.method in BODY_METHODS or framing_at is not None:
        at = len(kept) if framing_at is None else framing_at
        kept.insert(at, ("Content-Length", str(len(request.body))))
    return kept


def with_headers(request: Outgoing, headers: Sequence[tuple[str, str]]) -> Outgoing:
    return replace(request, headers=list(headers))
