"""What HAR reading and writing share: names, limits, errors, text and header helpers."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from nectoproxy.errors import NectoProxyError
from nectoproxy.store.records import (
    HeaderList,
    Timings,
)

#: What a HAR can be read from: its bytes, its text, the parsed document, or a file.
HarSource = bytes | str | Mapping[str, Any] | os.PathLike[str]


#: What Chrome DevTools writes as the mimeType of a response without a Content-Type.
UNKNOWN_MIME = "x-unknown"


HAR_TAIL = "\n]}}\n"


_PAGE = 500  # flows read from the store per page while exporting


_TEXT_TYPES = re.compile(
    r"^(text/|application/(json|javascript|ecmascript|xml|xhtml\+xml|x-www-form-urlencoded|"
    r"graphql|ld\+json|manifest\+json)\b|[^;]*\+(json|xml)\b|image/svg\+xml\b)",
    re.IGNORECASE,
)


_CHARSET = re.compile(r"charset=[\"']?([\w.:-]+)", re.IGNORECASE)


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


#: httpVersion as tools write it -> as the store keeps it (Chrome: "http/2.0", "h3").
_VERSIONS = {"h2": "HTTP/2.0", "http/2": "HTTP/2.0", "http/2.0": "HTTP/2.0", "h3": "HTTP/3",
             "http/3": "HTTP/3", "http/3.0": "HTTP/3", "http/1.1": "HTTP/1.1",
             "http/1.0": "HTTP/1.0", "http/0.9": "HTTP/0.9"}


#: The store's version -> the httpVersion written, as Chrome DevTools writes it for the
#: protocol it negotiated by ALPN (HTTP/1.x keeps its own name).
_HAR_VERSIONS = {"HTTP/2.0": "h2", "HTTP/2": "h2", "HTTP/3": "h3", "HTTP/3.0": "h3"}


def har_version(version: str) -> str:
    """A stored ``http_version`` as a HAR ``httpVersion``: ``h2`` for HTTP/2, ``h3`` for
    HTTP/3, anything else as it is."""
    return _HAR_VERSIONS.get(version.upper(), version)


_TLS_KEYS = ("sni", "version", "cipher", "alpn", "subject", "issuer", "not_after")


class HarError(NectoProxyError, ValueError):
    """A HAR document that cannot be read; the message names the entry and the field."""


def iso_time(timestamp: float) -> str:
    """ISO 8601 with milliseconds and a time zone, as HAR wants (``...T12:00:00.123Z``)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sent(received: HeaderList | None, sent: HeaderList | None) -> HeaderList:
    if sent is not None:
        return sent
    return received or []


def _get(fields: HeaderList, name: str) -> str | None:
    key = name.lower()
    return next((v for k, v in fields if k.lower() == key), None)


def charset_of(mime_type: str) -> str | None:
    match = _CHARSET.search(mime_type)
    return match.group(1) if match else None


def text_bytes(text: str, mime_type: str) -> bytes:
    """The bytes a HAR ``text`` stands for: encoded with the charset its type declares (HAR
    text is Unicode, trans-coded from that charset), UTF-8 when there is none or it fails."""
    charset = charset_of(mime_type)
    if charset:
        try:
            return text.encode(charset)
        except (UnicodeEncodeError, LookupError):
            pass
    return text.encode("utf-8", "surrogatepass")


def _join_address(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _marks(value: Any) -> Timings:
    """HAR timings (ms per phase; -1 or missing: not applicable) -> phase ends after the start.

    The inverse of :func:`har_timings`: ``connect`` includes ``ssl``, as HAR says, so the TCP
    connect ended ``ssl`` ms before the connect phase did.
    """
    timings = value if isinstance(value, Mapping) else {}
    phase = {key: _number(timings.get(key)) for key in
             ("blocked", "dns", "connect", "ssl", "send", "wait", "receive")}
    marks: dict[str, float] = {}
    if not any(v is not None and v > 0 for v in phase.values()):
        return cast(Timings, marks)  # all 0 or -1 (Firefox's cached entries): nothing known
    position = sum(v for v in (phase["blocked"], phase["dns"]) if v is not None and v > 0)
    connect, ssl = phase["connect"], phase["ssl"]
    if connect is not None and connect >= 0:
        if ssl is not None and 0 <= ssl <= connect:
            marks["connect"] = round(position + connect - ssl, 3)
            marks["tls_handshake"] = round(position + connect, 3)
        else:
            marks["connect"] = round(position + connect, 3)
        position += connect
    for key, mark in (("send", "request_sent"), ("wait", "first_byte"),
                      ("receive", "complete")):
        span = phase[key]
        if span is not None and span >= 0:
            position += span
            marks[mark] = round(position, 3)
    return cast(Timings, marks)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
