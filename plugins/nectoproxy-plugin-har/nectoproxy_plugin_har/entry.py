"""One finished (or failed) flow as a HAR 1.2 ``entry`` object.

Custom fields start with ``_`` as the spec asks: ``_error`` (why the flow failed, on the entry
and on its response, where Chrome DevTools reads it), ``_truncated`` (a body left out of the
file), ``_replayed`` (answered from a HAR file), ``_proxyStatus`` (the status the proxy itself
answered a failed flow with).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from nectoproxy import Flow, Headers, Request, Response
from nectoproxy_plugin_har.bodies import UNKNOWN_MIME, post_data, response_content

#: Flow metadata keys this plugin sets.
META_URL = "har.url"  # the URL as the client asked for it (before other plugins changed it)
META_REPLAYED = "har.replayed"  # True when the answer came from the replay file


def iso_time(timestamp: float) -> str:
    """ISO 8601 with milliseconds and a time zone, as HAR wants (``...T12:00:00.123Z``)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_entry(flow: Flow, error: str | None, max_body_size: int) -> dict[str, Any]:
    """The HAR entry for ``flow``; ``error`` is set for flows that reached ``on_error``."""
    timings = flow_timings(flow, failed=error is not None)
    entry: dict[str, Any] = {
        "startedDateTime": iso_time(flow.timestamp_start),
        "time": round(sum(v for v in timings.values() if v > 0), 3),
        "request": request_record(flow, max_body_size),
        "response": response_record(flow, error, max_body_size),
        "cache": {},
        "timings": timings,
        "connection": str(flow.connection.id),
    }
    if flow.server_address is not None:
        entry["serverIPAddress"] = flow.server_address[0]
    if error is not None:
        entry["_error"] = error
    if flow.metadata.get(META_REPLAYED):
        entry["_replayed"] = True
    return entry


def flow_timings(flow: Flow, failed: bool) -> dict[str, float]:
    """HAR timings in ms from the flow's timestamps; their sum is the flow's duration.

    blocked: the request read from the client and run through the plugins; connect: opening
    the upstream connection (DNS and TLS included; near 0 on a reused connection); send: 0,
    because sending the request is not timed apart from waiting (it is part of ``wait``);
    wait: until the response head arrived; receive: relaying the body to the client. dns and
    ssl are -1 (not measured apart from connect).
    """
    start = flow.timestamp_start
    end = flow.timestamp_end if flow.timestamp_end is not None else start
    request_end = flow.timestamp_request_end
    connected = flow.timestamp_connected
    response_start = flow.timestamp_response_start

    def span(a: float | None, b: float | None) -> float:
        if a is None or b is None:
            return -1
        return round(max(0.0, b - a) * 1000, 3)

    timings = {"blocked": span(start, request_end), "dns": -1.0, "connect": -1.0,
               "send": 0.0, "wait": 0.0, "receive": 0.0, "ssl": -1.0}
    last = request_end if request_end is not None else start
    if connected is not None:
        timings["connect"] = span(last, connected)
        last = connected
        if response_start is not None:
            timings["wait"] = span(connected, response_start)
            timings["receive"] = span(response_start, end)
        else:  # failed while waiting for the answer
            timings["wait"] = span(connected, end)
    elif failed:  # failed before a connection was open: refused, DNS, timeout, killed
        timings["connect"] = span(last, end)
    else:  # answered by a plugin: nothing upstream
        timings["receive"] = span(last, end)
    return timings


def header_list(headers: Headers) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in headers.fields]


def head_size(first_line: str, headers: Headers) -> int:
    """Bytes of a message head as HTTP/1.1 sends it (first line, fields, blank line)."""
    return len(first_line) + 2 + sum(len(k) + len(v) + 4 for k, v in headers.fields) + 2


def request_record(flow: Flow, max_body_size: int) -> dict[str, Any]:
    request: Request = flow.request
    record: dict[str, Any] = {
        "method": request.method,
        "url": request.url,
        "httpVersion": request.http_version,
        "cookies": request_cookies(request.headers),
        "headers": header_list(request.headers),
        "queryString": [{"name": k, "value": v}
                        for k, v in parse_qsl(request.query_string, keep_blank_values=True)],
        "headersSize": head_size(f"{request.method} {request.path} {request.http_version}",
                                 request.headers),
        "bodySize": (len(request.raw_content) if request.raw_content is not None
                     else flow.request_body_size or -1),
    }
    declared = "transfer-encoding" in request.headers or \
        request.headers.get("content-length", "0").strip() not in ("", "0")
    posted = post_data(request, declared, max_body_size)
    if posted is not None:
        record["postData"] = posted
    if META_URL in flow.metadata and flow.metadata[META_URL] != request.url:
        record["_originalUrl"] = flow.metadata[META_URL]
    return record


def response_record(flow: Flow, error: str | None, max_body_size: int) -> dict[str, Any]:
    response: Response | None = flow.response
    from_origin = flow.timestamp_response_start is not None
    if response is None or (error is not None and not from_origin):
        record: dict[str, Any] = {
            "status": 0, "statusText": "", "httpVersion": "", "cookies": [], "headers": [],
            "content": {"size": 0, "mimeType": UNKNOWN_MIME}, "redirectURL": "",
            "headersSize": -1, "bodySize": -1, "_error": error or "no response",
        }
        if response is not None:
            record["_proxyStatus"] = response.status_code
        return record
    record = {
        "status": response.status_code,
        "statusText": response.reason,
        "httpVersion": response.http_version,
        "cookies": response_cookies(response.headers),
        "headers": header_list(response.headers),
        "content": response_content(response, flow.response_body_size, max_body_size),
        "redirectURL": response.headers.get("location", ""),
        "headersSize": head_size(f"{response.http_version} {response.status_code} "
                                 f"{response.reason}", response.headers),
        "bodySize": flow.response_body_size,
    }
    if error is not None:
        record["_error"] = error
    return record


def request_cookies(headers: Headers) -> list[dict[str, Any]]:
    cookies = []
    for header in headers.get_all("cookie"):
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name:
                cookies.append({"name": name, "value": value})
    return cookies


def response_cookies(headers: Headers) -> list[dict[str, Any]]:
    cookies = []
    for header in headers.get_all("set-cookie"):
        first, *attributes = header.split(";")
        name, sep, value = first.strip().partition("=")
        if not sep or not name.strip():
            continue
        cookie: dict[str, Any] = {"name": name.strip(), "value": value.strip(),
                                  "httpOnly": False, "secure": False}
        for attribute in attributes:
            key, _, val = attribute.strip().partition("=")
            key = key.strip().lower()
            if key in ("path", "domain"):
                cookie[key] = val.strip()
            elif key == "expires" and (expires := _http_date(val.strip())):
                cookie["expires"] = expires
            elif key == "httponly":
                cookie["httpOnly"] = True
            elif key == "secure":
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
