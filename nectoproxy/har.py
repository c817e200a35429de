"""HAR 1.2, both ways: flow records as HAR entries, and HAR files (ours or another tool's) as
flow records. The one HAR implementation: ``nectoproxy sessions export|import``, the API's HAR
endpoints and the HAR plugin's recorder and replay all go through here.

Writing (:func:`har_entry`, :func:`iter_har_json`, :func:`export_session`) works on the store's
shapes: a :class:`~nectoproxy.store.FlowRecord` and its two bodies as stored. Reading
(:func:`read_har`, :func:`import_har`) gives them back, so that an export imported again is the
same flows: methods, URLs, statuses, headers (order and case), bodies byte for byte.

What an entry holds beyond the spec (see docs/har.md for the full list): the request and
response headers are the ones that were *sent* (the stored bodies are those bytes), and
``_receivedHeaders`` keeps the received ones when the proxy or a plugin changed them; a
content-encoded body is given decoded in ``text``, as the spec wants, and as stored in
``_encodedText`` (base64) with its ``_contentEncoding``; ``_error``, ``_mark``, ``_tags``,
``_modifiedBy``, ``_tunnel``... carry what HAR has no field for; the flow's comment is the
entry's standard ``comment``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from nectoproxy import encoding
from nectoproxy.errors import NectoProxyError
from nectoproxy.store.base import FlowStore
from nectoproxy.store.filters import Filter, parse_filter
from nectoproxy.store.records import (
    MARK_COLOURS,
    FlowRecord,
    HeaderList,
    Session,
    Timings,
    TlsInfo,
    camel,
    new_flow_id,
)
from nectoproxy.store.sqlite import SessionNotFound

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
_TLS_KEYS = ("sni", "version", "cipher", "alpn", "subject", "issuer", "not_after")


class HarError(NectoProxyError, ValueError):
    """A HAR document that cannot be read; the message names the entry and the field."""


# -- writing ---------------------------------------------------------------------------------


def iso_time(timestamp: float) -> str:
    """ISO 8601 with milliseconds and a time zone, as HAR wants (``...T12:00:00.123Z``)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def har_entry(record: FlowRecord, request_body: bytes | None,
              response_body: bytes | None) -> dict[str, Any]:
    """The HAR 1.2 entry of a flow. A body of None is one not known (left out of the file);
    ``b""`` is an empty one. The bodies are as stored: content-encoded as
    ``record.request_body_encoding`` / ``response_body_encoding`` say, maybe truncated."""
    timings = har_timings(record)
    entry: dict[str, Any] = {
        "startedDateTime": iso_time(record.started_at),
        "time": round(sum(v for k, v in timings.items() if k != "ssl" and v > 0), 3),
        "request": _request(record, request_body),
        "response": _response(record, response_body),
        "cache": {},
        "timings": timings,
    }
    ip, port = _split_address(record.server_addr)
    if ip:
        entry["serverIPAddress"] = ip
        if port is not None:
            entry["_serverPort"] = port  # as Safari writes it
    if record.comment:
        entry["comment"] = record.comment
    entry.update(_extras(record))
    # HAR's phases cannot say every set of phase ends (a failed flow's, a tunnel's): then the
    # record's own go along, so that reading the entry gives them back.
    if _marks(timings) != (record.timings or {}):
        entry["_timings"] = dict(record.timings or {})
    if record.duration != entry["time"]:
        entry["_duration"] = record.duration
    return entry


def har_timings(record: FlowRecord) -> dict[str, float]:
    """HAR timings (ms) from the record's phase ends (ms after ``started_at``).

    ``connect`` runs from the start to the end of the TLS handshake (or TCP connect) of a
    connection opened for this flow, TLS included as HAR wants (``ssl`` is that part); reading
    the request and running the plugins come first and are not timed apart, so they are in it
    (``blocked`` is 0, ``dns`` -1). ``send`` ends when the request was sent, ``wait`` at the
    first response byte, ``receive`` when the flow completed. A flow that failed puts the time
    after its last phase in the next one (a refused connection: ``connect``); one answered
    without the origin (a plugin, a replay) has it all in ``receive``.
    """
    marks = record.timings or Timings()
    tcp, tls = marks.get("connect"), marks.get("tls_handshake")
    sent, first = marks.get("request_sent"), marks.get("first_byte")
    end = marks.get("complete", record.duration)
    timings = {"blocked": 0.0, "dns": -1.0, "connect": -1.0, "ssl": -1.0,
               "send": 0.0, "wait": 0.0, "receive": 0.0}
    position = 0.0

    def until(mark: float) -> float:
        nonlocal position
        span = max(0.0, mark - position)
        position = max(position, mark)
        return round(span, 3)

    connected = tls if tls is not None else tcp
    if connected is not None:
        timings["connect"] = until(connected)
        if tls is not None and tcp is not None:
            timings["ssl"] = round(min(max(0.0, tls - tcp), timings["connect"]), 3)
    if sent is not None:
        timings["send"] = until(sent)
    if first is not None:
        timings["wait"] = until(first)
    if end is not None:
        rest = until(end)
        if first is not None:
            timings["receive"] = rest
        elif sent is not None:
            timings["wait"] = round(timings["wait"] + rest, 3)
        elif connected is not None:
            timings["send"] = round(timings["send"] + rest, 3)
        elif record.error:
            timings["connect"] = rest
        else:
            timings["receive"] = rest
    return timings


def _sent(received: HeaderList | None, sent: HeaderList | None) -> HeaderList:
    if sent is not None:
        return sent
    return received or []


def _header_list(fields: HeaderList) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in fields]


def _get(fields: HeaderList, name: str) -> str | None:
    key = name.lower()
    return next((v for k, v in fields if k.lower() == key), None)


def _head_size(first_line: str, fields: HeaderList, http_version: str) -> int:
    """Bytes of a message head as HTTP/1.x sends it; -1 for other versions."""
    if not http_version.upper().startswith("HTTP/1"):
        return -1
    return len(first_line) + 2 + sum(len(k) + len(v) + 4 for k, v in fields) + 2


def _har_url(record: FlowRecord) -> str:
    """An absolute URL, as HAR needs; a tunnel's ``host:port`` becomes ``https://host:port``."""
    if "://" in record.url:
        return record.url
    scheme = "https" if record.port == 443 or record.scheme == "https" else "http"
    return f"{scheme}://{record.url}"


def _request(record: FlowRecord, body: bytes | None) -> dict[str, Any]:
    fields = _sent(record.request_headers, record.request_headers_sent)
    version = record.http_version
    url = _har_url(record)
    request: dict[str, Any] = {
        "method": record.method or ("CONNECT" if record.kind == "tunnel" else "GET"),
        "url": url,
        "httpVersion": version,
        "cookies": request_cookies(fields),
        "headers": _header_list(fields),
        "queryString": [{"name": k, "value": v} for k, v in
                        parse_qsl(urlsplit(url).query, keep_blank_values=True)],
        "headersSize": _head_size(f"{record.method} {record.path} {version}", fields, version),
        "bodySize": _body_size(record.request_size, body),
    }
    posted = _post_data(record, fields, body)
    if posted is not None:
        request["postData"] = posted
    if url != record.url:
        request["_url"] = record.url
    if record.request_headers_sent is not None:
        request["_receivedHeaders"] = _header_list(record.request_headers)
    return request


def _body_size(size: int | None, body: bytes | None) -> int:
    """The size on the wire; else the stored body's length, if there is one; -1: unknown."""
    if size is not None:
        return size
    return len(body) if body else -1


def _post_data(record: FlowRecord, fields: HeaderList, body: bytes | None
               ) -> dict[str, Any] | None:
    """``postData``; ``text`` is always there (Chrome's importer reads only that), base64 with
    ``_encoding`` for bytes that are not text (HAR has no field for it)."""
    truncated = record.request_truncated
    if not body and not truncated:
        return None
    mime_type = _get(fields, "content-type") or ""
    posted: dict[str, Any] = {"mimeType": mime_type, "text": ""}
    if body:
        posted.update(_body_fields(body, record.request_body_encoding, mime_type, "_encoding")[0])
        if mime_type.lower().startswith("application/x-www-form-urlencoded") \
                and "_encoding" not in posted:
            posted["params"] = [{"name": k, "value": v} for k, v in
                                parse_qsl(posted["text"], keep_blank_values=True)]
    if truncated:
        _mark_truncated(posted, len(body or b""), record.request_size)
    return posted


def _response(record: FlowRecord, body: bytes | None) -> dict[str, Any]:
    if record.status is None:  # failed, pending, or a tunnel: no response
        response: dict[str, Any] = {
            "status": 0, "statusText": "", "httpVersion": "", "cookies": [], "headers": [],
            "content": {"size": 0, "mimeType": UNKNOWN_MIME}, "redirectURL": "",
            "headersSize": -1, "bodySize": -1,
        }
        if record.error:
            response["_error"] = record.error  # where Chrome DevTools writes and reads it
        return response
    fields = _sent(record.response_headers, record.response_headers_sent)
    reason = record.reason or ""
    version = record.http_version
    response = {
        "status": record.status,
        "statusText": reason,
        "httpVersion": version,
        "cookies": response_cookies(fields),
        "headers": _header_list(fields),
        "content": _content(record, fields, body),
        "redirectURL": _get(fields, "location") or "",
        "headersSize": _head_size(f"{version} {record.status} {reason}", fields, version),
        "bodySize": _body_size(record.response_size, body),
    }
    if record.response_headers_sent is not None and record.response_headers is not None:
        response["_receivedHeaders"] = _header_list(record.response_headers)
    if record.error:
        response["_error"] = record.error
    return response


def _content(record: FlowRecord, fields: HeaderList, body: bytes | None) -> dict[str, Any]:
    sent_type = _get(fields, "content-type")
    content: dict[str, Any] = {"size": 0,
                               "mimeType": record.content_type or sent_type or UNKNOWN_MIME}
    decoded_size: int | None = None
    coding = record.response_body_encoding
    truncated = record.response_truncated
    if body is not None and (body or not truncated):  # nothing kept: no text at all
        # (decoded with the charset of the headers the body went with, as read_har does)
        text_fields, decoded_size = _body_fields(
            body, coding, sent_type or record.content_type or "", "encoding")
        content.update(text_fields)
    if body is not None and not truncated and decoded_size is not None:
        content["size"] = decoded_size
        if coding:
            wire = record.response_size if record.response_size is not None else len(body)
            content["compression"] = decoded_size - wire
    else:
        known = (record.response_size_decoded, record.response_size,
                 None if body is None else len(body))
        content["size"] = max(0, next((n for n in known if n is not None), 0))
    if truncated:
        _mark_truncated(content, None if body is None else len(body), record.response_size)
    return content


def _mark_truncated(record: dict[str, Any], stored: int | None, size: int | None) -> None:
    record["_truncated"] = True
    total = "?" if size is None else str(size)
    record["comment"] = f"truncated: {stored or 0} of {total} bytes stored"


def _body_fields(body: bytes, coding: str, mime_type: str, base64_key: str
                 ) -> tuple[dict[str, Any], int | None]:
    """``text`` (+ the base64 flag) for a body, and its decoded size (None: undecodable).

    A content-encoded body is given decoded, as HAR wants, with the bytes as stored in
    ``_encodedText`` (base64) so that reading the file gives them back exactly; one that
    cannot be decoded (unknown coding, truncated) is given as stored, base64.
    """
    if not coding or coding.lower() == "identity":
        return _text_fields(body, mime_type, base64_key), len(body)
    try:
        decoded = encoding.decode(body, coding)
    except Exception as exc:  # noqa: BLE001 -- any codec's error on foreign bytes
        return {"text": _b64(body), base64_key: "base64", "_contentEncoding": coding,
                "comment": f"stored with Content-Encoding {coding}, which could not be "
                           f"undone: {exc or type(exc).__name__}"}, None
    fields = _text_fields(decoded, mime_type, base64_key)
    fields.update({"_contentEncoding": coding, "_encodedText": _b64(body)})
    return fields, len(decoded)


def _text_fields(data: bytes, mime_type: str, base64_key: str) -> dict[str, Any]:
    text = as_text(data, mime_type)
    if text is None:
        return {"text": _b64(data), base64_key: "base64"}
    return {"text": text}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def is_textual(mime_type: str) -> bool:
    return bool(_TEXT_TYPES.match(mime_type.strip()))


def charset_of(mime_type: str) -> str | None:
    match = _CHARSET.search(mime_type)
    return match.group(1) if match else None


def as_text(data: bytes, mime_type: str) -> str | None:
    """``data`` as text if its type is textual (or not given) and the text gives back exactly
    these bytes (see :func:`text_bytes`); None means "write it as base64"."""
    if mime_type and not is_textual(mime_type):
        return None
    for candidate in dict.fromkeys((charset_of(mime_type) or "utf-8", "utf-8")):
        try:
            text = data.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
        if text_bytes(text, mime_type) == data:
            return text
    return None


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


def request_cookies(fields: HeaderList) -> list[dict[str, Any]]:
    cookies = []
    for name, header in fields:
        if name.lower() != "cookie":
            continue
        for pair in header.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key:
                cookies.append({"name": key, "value": value})
    return cookies


def response_cookies(fields: HeaderList) -> list[dict[str, Any]]:
    cookies = []
    for name, header in fields:
        if name.lower() != "set-cookie":
            continue
        first, *attributes = header.split(";")
        key, sep, value = first.strip().partition("=")
        if not sep or not key.strip():
            continue
        cookie: dict[str, Any] = {"name": key.strip(), "value": value.strip(),
                                  "httpOnly": False, "secure": False}
        for attribute in attributes:
            attr, _, val = attribute.strip().partition("=")
            attr = attr.strip().lower()
            if attr in ("path", "domain"):
                cookie[attr] = val.strip()
            elif attr == "expires" and (expires := _http_date(val.strip())):
                cookie["expires"] = expires
            elif attr == "httponly":
                cookie["httpOnly"] = True
            elif attr == "secure":
                cookie["secure"] = True
        cookies.append(cookie)
    return cookies


def _http_date(text: str) -> str | None:
    """An Expires date in ISO 8601, or None (an unparsable date would break importers)."""
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _extras(record: FlowRecord) -> dict[str, Any]:
    """The ``_`` fields of an entry: what NectoProxy knows and HAR has no field for."""
    extras: dict[str, Any] = {"_id": record.id}
    if record.error:
        extras["_error"] = record.error
    if record.mark:
        extras["_mark"] = record.mark
    if record.tags:
        extras["_tags"] = list(record.tags)
    if record.modified_by:
        extras["_modifiedBy"] = list(record.modified_by)
    if record.replay_of:
        extras["_replayOf"] = record.replay_of
    if record.websocket:
        extras["_websocket"] = True
    if record.mode != "regular":
        extras["_mode"] = record.mode
    if record.client_addr:
        extras["_clientAddress"] = record.client_addr
    for key, info in (("_tlsClient", record.tls_client), ("_tlsServer", record.tls_server)):
        if info:
            extras[key] = {camel(k): v for k, v in info.items()}
    if record.kind != "http":
        extras["_kind"] = record.kind
    if record.kind == "tunnel":
        extras["_tunnel"] = {"host": record.host, "port": record.port, "scheme": record.scheme,
                             "bytesUp": record.bytes_up, "bytesDown": record.bytes_down}
    return extras


def _split_address(address: str | None) -> tuple[str | None, int | None]:
    """``ip:port``, ``[v6]:port``, ``v6`` or ``ip`` -> (ip, port)."""
    if not address:
        return None, None
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    return host, int(port) if port.isdigit() else None


def _join_address(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


# -- the document ----------------------------------------------------------------------------


def har_head(*, creator: str = "NectoProxy", version: str, comment: str = "") -> str:
    """The start of a HAR document, up to and including the ``[`` of its entries."""
    log: dict[str, Any] = {"version": "1.2", "creator": {"name": creator, "version": version},
                           "pages": []}
    if comment:
        log["comment"] = comment
    head = json.dumps({"log": log}, ensure_ascii=False)
    return head[:-2] + ', "entries": ['


def entry_json(entry: Mapping[str, Any]) -> str:
    """One entry as compact JSON text that always encodes to UTF-8 (a lone surrogate, which
    only a string from elsewhere can hold, is escaped instead)."""
    text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(entry, separators=(",", ":"))
    return text


def iter_har_json(entries: Iterable[dict[str, Any]], *, creator: str = "NectoProxy",
                  version: str, comment: str = "") -> Iterator[str]:
    """The whole document ``{"log": {"version": "1.2", ..., "entries": [...]}}`` in pieces: the
    head, one piece per entry, then :data:`HAR_TAIL`; entries are consumed one at a time."""
    yield har_head(creator=creator, version=version, comment=comment)
    separator = "\n"
    for entry in entries:
        yield separator + entry_json(entry)
        separator = ",\n"
    yield HAR_TAIL


# -- reading ---------------------------------------------------------------------------------


def har_entries(data: HarSource) -> list[Any]:
    """The ``log.entries`` list of a HAR document (parsed if needed; a UTF-8 byte order mark
    is allowed); HarError if it is not JSON or not a HAR."""
    document: Any = data
    if isinstance(data, os.PathLike):
        try:
            data = Path(data).read_bytes()
        except OSError as exc:
            raise HarError(f"cannot read {os.fspath(document)}: {exc.strerror or exc}") from None
    if isinstance(data, bytes | str):
        if isinstance(data, str):
            data = data.removeprefix("\ufeff")
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise HarError(f"not JSON: {exc}") from None
    log = document.get("log") if isinstance(document, Mapping) else None
    entries = log.get("entries") if isinstance(log, Mapping) else None
    if not isinstance(entries, list):
        raise HarError("not a HAR file: no log.entries list")
    return entries


def read_har(data: HarSource) -> Iterator[tuple[FlowRecord, bytes | None, bytes | None]]:
    """Each entry of a HAR document as (record, request body, response body).

    The document is checked at once (HarError if it is not one); each entry as it is reached
    (HarError naming the entry and the field). Bodies are the bytes the entry stands for:
    base64 decoded, text encoded with its declared charset (else UTF-8), ``_encodedText``
    when we wrote one; None where the file has no body (a browser that did not keep it).
    Records get fresh ids and no session; tolerated: see :func:`read_entry`.
    """
    entries = har_entries(data)
    return (read_entry(entry, index) for index, entry in enumerate(entries))


def read_entry(entry: Any, index: int) -> tuple[FlowRecord, bytes | None, bytes | None]:
    """One HAR entry as a record and its bodies.

    Tolerated, as real tools write them: optional fields missing or null, ``-1`` sizes,
    ``timings: {}``, failed requests (status 0, empty response, ``_error``), HTTP/2
    pseudo-headers (dropped: the method, URL and status say the same), ``h2`` / ``http/2.0``
    / ``HTTP/2`` versions, headers as ``[name, value]`` pairs, response text absent,
    ``postData`` with only ``params``, a ``redirectURL`` of null, unknown ``_`` fields.
    """
    where = f"log.entries[{index}]"
    entry = _object(entry, where)
    request = _object(entry.get("request"), f"{where}.request")
    response = _object(entry.get("response") or {}, f"{where}.response")
    method = _required_str(request, "method", f"{where}.request")
    url = _required_str(request, "url", f"{where}.request")
    tunnel = entry.get("_tunnel") if isinstance(entry.get("_tunnel"), Mapping) else None
    original_url = request.get("_url") if isinstance(request.get("_url"), str) else None
    record = _locate(url, original_url, tunnel, f"{where}.request.url")
    record.method = method
    record.http_version = _version(request.get("httpVersion")) or \
        _version(response.get("httpVersion"))
    record.request_headers, record.request_headers_sent = _header_pair(
        request, f"{where}.request")
    record.started_at = _started(entry.get("startedDateTime"), f"{where}.startedDateTime")
    _annotations(record, entry, response)
    request_body = _request_body(record, request, f"{where}.request")
    response_body = _response_part(record, response, f"{where}.response")
    _read_timings(record, entry)
    return record, request_body, response_body


def _read_timings(record: FlowRecord, entry: Mapping[str, Any]) -> None:
    """The phase ends and the duration: ours (``_timings``, ``_duration``) when we wrote
    them, else from HAR's timings and time."""
    ours = entry.get("_timings")
    if isinstance(ours, Mapping) and all(_number(v) is not None for v in ours.values()):
        record.timings = cast(Timings, {k: float(v) for k, v in ours.items()
                                        if k in Timings.__annotations__})
    else:
        record.timings = _marks(entry.get("timings"))
        if record.status is None:
            record.timings.pop("first_byte", None)  # HAR's wait is 0 then, not a first byte
    record.duration = _number(entry.get("time"))
    if "_duration" in entry:
        record.duration = _number(entry["_duration"])
    elif record.duration is None:
        record.duration = record.timings.get("complete")


def _locate(url: str, original: str | None, tunnel: Mapping[str, Any] | None,
            where: str) -> FlowRecord:
    """A record with the URL's parts filled in (a tunnel's from its ``_tunnel`` object)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme or not parts.netloc:
        raise HarError(f"{where}: not an absolute URL: {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise HarError(f"{where}: invalid port in {url!r}") from None
    path = (parts.path or ("" if tunnel is not None else "/")) + \
        (f"?{parts.query}" if parts.query else "")
    record = FlowRecord(id=new_flow_id(), scheme=scheme, url=original or url,
                        host=(parts.hostname or "").lower(),
                        port=port if port is not None else _DEFAULT_PORTS.get(scheme), path=path)
    if tunnel is not None:
        record.kind = "tunnel"
        host, tunnel_port = tunnel.get("host"), tunnel.get("port")
        if isinstance(host, str) and host:
            record.host = host.lower()
        if isinstance(tunnel.get("scheme"), str) and tunnel["scheme"]:
            record.scheme = tunnel["scheme"].lower()
        if isinstance(tunnel_port, int) and not isinstance(tunnel_port, bool):
            record.port = tunnel_port
        record.bytes_up = _count(tunnel.get("bytesUp"))
        record.bytes_down = _count(tunnel.get("bytesDown"))
    return record


def _version(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    text = value.strip()
    return _VERSIONS.get(text.lower(), text)


def _header_pair(message: Mapping[str, Any], where: str) -> tuple[HeaderList, HeaderList | None]:
    """(as received, as sent or None): ``headers`` are the sent ones; ``_receivedHeaders``,
    when we wrote it, the received ones."""
    headers = _headers(message.get("headers"), f"{where}.headers")
    if message.get("_receivedHeaders") is None:
        return headers, None
    return _headers(message["_receivedHeaders"], f"{where}._receivedHeaders"), headers


def _headers(value: Any, where: str) -> HeaderList:
    if value is None:
        return []
    if not isinstance(value, list):
        raise HarError(f"{where}: expected a list of headers, got {_kind(value)}")
    fields: HeaderList = []
    for number, item in enumerate(value):
        if isinstance(item, Mapping):
            name, text = item.get("name"), item.get("value")
        elif isinstance(item, list) and len(item) == 2:  # [name, value], as Slack writes
            name, text = item
        else:
            raise HarError(f"{where}[{number}]: expected a name and a value, got {_kind(item)}")
        if not isinstance(name, str) or not name:
            raise HarError(f"{where}[{number}].name: expected a header name, got {name!r}")
        if name.startswith(":"):
            continue  # an HTTP/2 pseudo-header
        if text is None:
            text = ""
        elif isinstance(text, int | float) and not isinstance(text, bool):
            text = str(text)
        elif not isinstance(text, str):
            raise HarError(f"{where}[{number}].value: expected a string, got {_kind(text)}")
        fields.append((name, text))
    return fields


def _started(value: Any, where: str) -> float:
    if value is None:
        return time.time()  # not a time the store's retention would delete at once
    if not isinstance(value, str):
        raise HarError(f"{where}: expected an ISO 8601 date, got {_kind(value)}")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise HarError(f"{where}: not an ISO 8601 date: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


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


def _annotations(record: FlowRecord, entry: Mapping[str, Any],
                 response: Mapping[str, Any]) -> None:
    """The ``_`` fields and the comment: ours, and Chrome's / Charles's ways of failing."""
    error = entry.get("_error") or response.get("_error")
    if error is not None:
        record.error = str(error)
    charles = response.get("_charlesStatus")
    if not record.error and isinstance(charles, str) and charles.upper() != "COMPLETE" \
            and not _status_given(response):
        record.error = f"Charles: {charles}"
    comment = entry.get("comment", entry.get("_comment"))
    if isinstance(comment, str):
        record.comment = comment
    mark = entry.get("_mark")
    if mark in MARK_COLOURS:
        record.mark = mark
    record.tags = _strings(entry.get("_tags"))
    record.modified_by = _strings(entry.get("_modifiedBy"))
    for key in ("_replayOf", "_mode", "_clientAddress", "_kind"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            attribute = {"_replayOf": "replay_of", "_mode": "mode",
                         "_clientAddress": "client_addr", "_kind": "kind"}[key]
            setattr(record, attribute, value)
    record.websocket = entry.get("_websocket") is True
    for key in ("_tlsClient", "_tlsServer"):
        info = entry.get(key)
        if isinstance(info, Mapping):
            tls = {name: info[camel(name)] for name in _TLS_KEYS
                   if isinstance(info.get(camel(name)), str)}
            setattr(record, "tls_client" if key == "_tlsClient" else "tls_server",
                    cast(TlsInfo, tls))
    ip = entry.get("serverIPAddress")
    if isinstance(ip, str) and ip:
        port = entry.get("_serverPort")
        record.server_addr = _join_address(
            ip, port if isinstance(port, int) and not isinstance(port, bool) else None)


def _status_given(response: Mapping[str, Any]) -> bool:
    status = response.get("status")
    return isinstance(status, int) and status > 0


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str)]


def _request_body(record: FlowRecord, request: Mapping[str, Any], where: str) -> bytes | None:
    size = _count(request.get("bodySize"))
    fields = _sent(record.request_headers, record.request_headers_sent)
    posted = request.get("postData")
    body: bytes | None
    if posted is None:
        body = b"" if size == 0 else None  # no postData: an empty body, if it says so
        coding = ""
    else:
        posted = _object(posted, f"{where}.postData")
        mime_type = _text(posted, "mimeType")
        body, coding, _ = _body(posted, _get(fields, "content-type") or mime_type,
                                f"{where}.postData", ("_encoding", "encoding"))
        if body is None and isinstance(posted.get("params"), list):
            body = _form(posted["params"], mime_type, f"{where}.postData.params")
        record.request_truncated = posted.get("_truncated") is True
    if body is None and size:
        record.request_truncated = True  # it had a body, and the file does not have it
    record.request_body_encoding = coding
    record.request_size = size if size is not None else _wire_size(
        body, coding, record.request_truncated, fields)
    if body is not None and not coding and not record.request_truncated:
        record.request_size_decoded = len(body)
    return body


def _form(params: list[Any], mime_type: str, where: str) -> bytes | None:
    """A URL-encoded body rebuilt from ``params`` (Insomnia, Firefox may give only those)."""
    if mime_type and not mime_type.lower().startswith("application/x-www-form-urlencoded"):
        return None
    pairs = []
    for number, param in enumerate(params):
        param = _object(param, f"{where}[{number}]")
        name, value = param.get("name"), param.get("value", "")
        if not isinstance(name, str) or not isinstance(value, str):
            raise HarError(f"{where}[{number}]: expected a name and a value")
        pairs.append((name, value))
    return urlencode(pairs).encode("ascii") if pairs else b""


def _response_part(record: FlowRecord, response: Mapping[str, Any],
                   where: str) -> bytes | None:
    status = response.get("status", 0)
    if isinstance(status, str) and status.strip().isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 0 <= status <= 999:
        raise HarError(f"{where}.status: expected a status code, got {status!r}")
    if status == 0:  # a failed request, or one still pending: no response
        return None
    record.status = status
    reason = response.get("statusText")
    record.reason = reason if isinstance(reason, str) else ""
    record.response_headers, record.response_headers_sent = _header_pair(response, where)
    fields = _sent(record.response_headers, record.response_headers_sent)
    content = _object(response.get("content") or {}, f"{where}.content")
    mime_type = _text(content, "mimeType")
    header_type = _get(fields, "content-type")
    record.content_type = header_type or (mime_type if mime_type not in ("", UNKNOWN_MIME)
                                          else None)
    body, coding, decoded_size = _body(content, header_type or mime_type,
                                       f"{where}.content", ("encoding", "_encoding"))
    size = _count(content.get("size"))
    # A body the file does not have (the browser did not keep it) is not an empty one.
    record.response_truncated = content.get("_truncated") is True or (body is None and
                                                                     size != 0)
    record.response_body_encoding = coding
    if decoded_size is not None and not record.response_truncated:
        size = decoded_size  # Safari writes size 0 for bodies from its memory cache
    record.response_size_decoded = size
    wire = _count(response.get("bodySize"))
    record.response_size = wire if wire is not None else _wire_size(
        body, coding, record.response_truncated, fields)
    return body


def _wire_size(body: bytes | None, coding: str, truncated: bool,
               fields: HeaderList) -> int | None:
    """The body's size on the wire when the file does not say: its length if it is whole and
    as sent (not text decoded from a Content-Encoding the headers name)."""
    if body is None or truncated:
        return None
    if not coding and _get(fields, "content-encoding") not in (None, "", "identity"):
        return None
    return len(body)


def _body(obj: Mapping[str, Any], mime_type: str, where: str, base64_keys: tuple[str, str]
          ) -> tuple[bytes | None, str, int | None]:
    """(bytes, their content-coding, decoded size or None) of a ``content`` / ``postData``."""
    coding = obj.get("_contentEncoding")
    coding = coding if isinstance(coding, str) else ""
    text = obj.get("text")
    if text is None:
        return None, "", None
    if not isinstance(text, str):
        raise HarError(f"{where}.text: expected a string, got {_kind(text)}")
    if any(obj.get(key) == "base64" for key in base64_keys):
        data = _unbase64(text, f"{where}.text")
    else:
        data = text_bytes(text, mime_type)
    encoded = obj.get("_encodedText")
    if coding and isinstance(encoded, str):
        return _unbase64(encoded, f"{where}._encodedText"), coding, len(data)
    return data, coding, None if coding else len(data)


def _unbase64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HarError(f"{where}: invalid base64 ({exc})") from None


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise HarError(f"{where}: expected an object, got {_kind(value)}")
    return value


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _required_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        raise HarError(f"{where}.{key}: missing")
    if not isinstance(value, str) or not value:
        raise HarError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _count(value: Any) -> int | None:
    """A size: None for missing, null, -1 (unknown), or anything but a whole number."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


# -- the store -------------------------------------------------------------------------------


def import_har(store: FlowStore, data: HarSource, name: str | None = None) -> Session:
    """A new session (not activated) holding every entry of a HAR document, in file order.

    ``name`` defaults to "Imported <file name>" for a path, else "Imported <date time>".
    Nothing is kept if an entry is malformed: the HarError names it, the session is removed.
    """
    entries = har_entries(data)
    if name is None:
        label = Path(data).name if isinstance(data, os.PathLike) else \
            time.strftime("%Y-%m-%d %H:%M")
        name = f"Imported {label}"[:200]
    session = store.create_session(name)
    try:
        for index, entry in enumerate(entries):
            record, request_body, response_body = read_entry(entry, index)
            record.session_id = session.id
            store.save_flow(record, request_body, response_body)
    except BaseException:
        store.delete_session(session.id)
        raise
    imported = store.get_session(session.id)
    assert imported is not None
    return imported


def iter_session_entries(store: FlowStore, session_id: int,
                         filter: str | None = None) -> Iterator[dict[str, Any]]:
    """The HAR entries of a session's flows (those matching ``filter``), oldest first, a page
    of flows at a time. The session and the filter are checked at once."""
    if store.get_session(session_id) is None:
        raise SessionNotFound(f"no session {session_id}")
    parsed = parse_filter(filter)
    return _entries(store, session_id, parsed)


def _entries(store: FlowStore, session_id: int, parsed: Filter) -> Iterator[dict[str, Any]]:
    cursor: int | None = None
    while True:
        page, cursor = store.list_flows(session_id=session_id, filter=parsed, limit=_PAGE,
                                        cursor=cursor, order="oldest")
        for summary in page:
            record = store.get_flow(summary.id)
            if record is None:
                continue  # deleted while we were reading
            request = store.get_body(summary.id, "request")
            response = store.get_body(summary.id, "response")
            yield har_entry(record, None if request is None else request[0],
                            None if response is None else response[0])
        if cursor is None:
            return


def export_session(store: FlowStore, session_id: int,
                   filter: str | None = None) -> Iterator[str]:
    """A session as a HAR document, in pieces (see :func:`iter_har_json`): memory stays flat
    however many flows it has. SessionNotFound / FilterError are raised at once."""
    from nectoproxy import __version__

    entries = iter_session_entries(store, session_id, filter)
    session = store.get_session(session_id)
    comment = f"NectoProxy session {session_id}: {session.name}" if session else ""
    return iter_har_json(entries, version=__version__, comment=comment)


__all__ = [
    "HAR_TAIL",
    "UNKNOWN_MIME",
    "HarError",
    "HarSource",
    "as_text",
    "entry_json",
    "export_session",
    "har_entries",
    "har_entry",
    "har_head",
    "har_timings",
    "import_har",
    "iso_time",
    "iter_har_json",
    "iter_session_entries",
    "read_entry",
    "read_har",
    "request_cookies",
    "response_cookies",
    "text_bytes",
]
