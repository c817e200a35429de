"""Flow records as HAR 1.2 entries, and whole documents written in pieces."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from nectoproxy import encoding
from nectoproxy.har.common import (
    _TEXT_TYPES,
    HAR_TAIL,
    UNKNOWN_MIME,
    _get,
    _marks,
    _sent,
    charset_of,
    har_version,
    iso_time,
    text_bytes,
)
from nectoproxy.store.records import (
    FlowRecord,
    HeaderList,
    Timings,
    camel,
)


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


def _header_list(fields: HeaderList) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in fields]


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
    version = har_version(record.http_version)
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
    version = har_version(record.http_version)
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
