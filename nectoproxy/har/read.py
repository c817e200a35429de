"""HAR files (ours or another tool's: browsers, Charles, Insomnia) as flow records."""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

from nectoproxy.har.common import (
    _DEFAULT_PORTS,
    _TLS_KEYS,
    _VERSIONS,
    UNKNOWN_MIME,
    HarError,
    HarSource,
    _get,
    _join_address,
    _marks,
    _number,
    _sent,
    text_bytes,
)
from nectoproxy.store.records import (
    MARK_COLOURS,
    FlowRecord,
    HeaderList,
    Timings,
    TlsInfo,
    camel,
    new_flow_id,
)


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
