"""What capture hands a writer per flow: its head and its end as tuples of plain values.

Capture runs on the proxy's event loop, so it only copies what the flow holds into two tuples
(:data:`Head` when the request head is in, :data:`End` when the flow is over): no records, no
dicts, no header scans. The writer turns them into a :class:`FlowRecord` and its finishing
fields with :func:`record_from_head` and :func:`fields_from_end`, in its own thread or process
(``ProcessWriter`` sends the tuples as they are, in ``marshal``'s format, which reads and
writes plain values several times faster than pickle). These two functions are the one
mapping from what the engine saw to what the store keeps.

Times are Unix seconds as the flow took them; the mapping makes them the store's units
(milliseconds from ``started_at``).
"""

from __future__ import annotations

from typing import Any

from nectoproxy.store.records import FlowRecord, HeaderList, Timings, TlsInfo

#: A flow's head: (id, mode, client address, scheme, method, url, host, port, path,
#: HTTP version, request header fields as received, started at, client TLS (sni, version,
#: cipher, alpn) or None, the flow it replays or None).
Head = tuple[str, str, "str | None", str, str, str, str, "int | None", str, str,
             list[tuple[str, str]], float, "tuple[Any, ...] | None", "str | None"]

#: A flow's end, by position (see :func:`end_tuple`'s fields in ``nectoproxy.capture``):
END_FIELDS = (
    "started_at",       # float: the flow's start (the timings' origin)
    "times",            # (tcp connected, TLS established, request sent, first byte, end)
    "server_addr",      # str | None
    "tls_server",       # (sni, version, cipher, alpn, subject, issuer, not_after) | None
    "error",            # str | None
    "modified_by",      # list[str]
    "websocket",        # bool
    "target",           # (method, url, host, port, path, scheme) when a plugin moved it
    "headers_sent",     # request header fields as sent, when they differ from the received
    "request_coding",   # the sent request's content-coding ("" = identity)
    "request_size",     # int
    "response",         # (status, reason, fields as received, fields as sent, size) | None
    "bodies",           # (request truncated, response truncated, request decoded size,
                        #  response decoded size): the decoded sizes -1 when not counted
    "trailers",         # (the request's trailer fields, the response's): each None if none
)
End = tuple[Any, ...]

_TIMING_KEYS = ("connect", "tls_handshake", "request_sent", "first_byte", "complete")
_CLIENT_TLS_KEYS = ("sni", "version", "cipher", "alpn")
_SERVER_TLS_KEYS = ("sni", "version", "cipher", "alpn", "subject", "issuer", "not_after")
_PROXY_AUTHORIZATION = "proxy-authorization"


def redacted(fields: list[tuple[str, str]]) -> HeaderList:
    """The fields as a new list; the client's credentials for the proxy itself are not kept."""
    return [(name, "[redacted]") if len(name) == 19 and name.lower() == _PROXY_AUTHORIZATION
            else (name, value) for name, value in fields]


def field(fields: list[tuple[str, str]], lower: str) -> str | None:
    """The first value of a header (``lower``: its name in lower case), without the
    case-folding of every name: most lengths differ."""
    size = len(lower)
    for name, value in fields:
        if len(name) == size and name.lower() == lower:
            return value
    return None


def coding(fields: list[tuple[str, str]]) -> str:
    """A message's content-coding, "" for identity."""
    value = field(fields, "content-encoding")
    return value.strip().lower() if value else ""


def ms(start: float, when: float | None) -> float | None:
    return None if when is None else round(max(0.0, when - start) * 1000, 3)


def _tls(values: tuple[Any, ...] | None, keys: tuple[str, ...]) -> TlsInfo | None:
    if values is None:
        return None
    info: TlsInfo = {key: value for key, value in zip(keys, values)  # type: ignore[assignment]
                     if value}
    return info


def record_from_head(head: Head) -> FlowRecord:
    """The row a flow starts with, from its head."""
    (flow_id, mode, client, scheme, method, url, host, port, path, version, headers,
     started_at, tls, replay_of) = head
    received = redacted(headers)
    return FlowRecord(
        id=flow_id, mode=mode, client_addr=client, scheme=scheme, method=method, url=url,
        host=host, port=port, path=path, http_version=version, request_headers=received,
        request_body_encoding=coding(received), started_at=started_at,
        tls_client=_tls(tls, _CLIENT_TLS_KEYS), replay_of=replay_of)


def fields_from_end(end: End) -> dict[str, Any]:
    """The FlowRecord fields a flow's end sets (what ``flow_finished`` takes)."""
    (start, times, server_addr, tls_server, error, modified_by, websocket, target, sent,
     request_coding, request_size, response, bodies, trailers) = end
    timings = Timings()
    for key, when in zip(_TIMING_KEYS, times, strict=True):
        if when is not None:
            timings[key] = round(max(0.0, when - start) * 1000, 3)  # type: ignore[literal-required]
    fields: dict[str, Any] = {
        "server_addr": server_addr, "timings": timings,
        "tls_server": _tls(tls_server, _SERVER_TLS_KEYS), "error": error,
        "modified_by": modified_by, "websocket": websocket, "duration": ms(start, times[4])}
    if target is not None:
        (fields["method"], fields["url"], fields["host"], fields["port"], fields["path"],
         fields["scheme"]) = target
    if sent is not None:
        fields["request_headers_sent"] = redacted(sent)
    fields.update(request_size=request_size, request_body_encoding=request_coding)
    if not request_coding:
        fields["request_size_decoded"] = request_size
    if response is not None:
        status, reason, received, shown, size = response
        encoding = coding(shown)
        fields.update(status=status, reason=reason, response_headers=received,
                      response_headers_sent=shown if shown != received else None,
                      content_type=field(shown, "content-type"), response_size=size,
                      response_body_encoding=encoding)
        if not encoding:
            fields["response_size_decoded"] = size
    request_truncated, response_truncated, request_decoded, response_decoded = bodies
    for direction, truncated, decoded in (("request", request_truncated, request_decoded),
                                          ("response", response_truncated, response_decoded)):
        if truncated:
            fields[f"{direction}_truncated"] = True
        elif decoded != -1:
            fields[f"{direction}_size_decoded"] = decoded
    if trailers[0] is not None:
        fields["request_trailers"] = trailers[0]
    if trailers[1] is not None:
        fields["response_trailers"] = trailers[1]
    return fields


__all__ = ["END_FIELDS", "End", "Head", "coding", "field", "fields_from_end",
           "record_from_head", "redacted"]
