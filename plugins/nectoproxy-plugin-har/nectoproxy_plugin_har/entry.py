"""One finished (or failed) flow as a HAR entry.

The entry is :func:`nectoproxy.har.har_entry`'s (NectoProxy's one HAR implementation), made
from the flow's store record. What this module adds is the plugin's own: which body bytes go
into the file (``max_body_size``; a body streamed through has none), why a body was left out
(``comment``), and the fields only the plugin knows: ``connection`` (the client connection's
number), ``_replayed`` (answered from the replay file), ``_originalUrl`` (the URL before other
plugins changed it), ``_proxyStatus`` (the status the proxy answered a failed flow with).
"""

from __future__ import annotations

from typing import Any

from nectoproxy import Flow, Request, Response, encoding
from nectoproxy.capture import record_from_flow
from nectoproxy.har import har_entry

#: Flow metadata keys this plugin sets.
META_URL = "har.url"  # the URL as the client asked for it (before other plugins changed it)
META_REPLAYED = "har.replayed"  # True when the answer came from the replay file


def build_entry(flow: Flow, error: str | None, max_body_size: int) -> dict[str, Any]:
    """The HAR entry for ``flow``; ``error`` is set for flows that reached ``on_error``."""
    record = record_from_flow(flow)
    record.error = error
    request, response = flow.request, flow.response
    declared = "transfer-encoding" in request.headers or \
        request.headers.get("content-length", "0").strip() not in ("", "0")
    request_body, request_note, _ = _kept(request, max_body_size, "request body", declared)
    record.request_body_encoding = request.headers.get("content-encoding", "")
    record.request_truncated = request_note is not None
    # A failed flow that got no answer from the origin has no response in the file, even if
    # the proxy answered the client itself (with a 502, say): that status is _proxyStatus.
    answered = response is not None and (error is None or flow.timestamp_response_start
                                         is not None)
    response_body = response_note = None
    if answered and response is not None:
        response_body, response_note, decoded = _kept(response, max_body_size, "body", True,
                                                      flow.response_body_size)
        record.response_body_encoding = response.headers.get("content-encoding", "")
        record.response_truncated = response_note is not None
        record.response_size_decoded = decoded
    else:
        record.status = record.reason = record.content_type = None
        record.response_headers = record.response_headers_sent = None
    entry = har_entry(record, request_body, response_body)
    if request_note is not None:
        entry["request"]["postData"]["comment"] = request_note
    if response_note is not None:
        entry["response"]["content"]["comment"] = response_note
    entry["connection"] = str(flow.connection.id)
    if flow.metadata.get(META_REPLAYED):
        entry["_replayed"] = True
    if META_URL in flow.metadata and flow.metadata[META_URL] != request.url:
        entry["request"]["_originalUrl"] = flow.metadata[META_URL]
    if error is not None and response is not None and not answered:
        entry["response"]["_proxyStatus"] = response.status_code
    return entry


def _kept(message: Request | Response, max_body_size: int, what: str, declared: bool,
          wire_size: int | None = None) -> tuple[bytes | None, str | None, int | None]:
    """(the bytes to record or None, why they were left out, the decoded size if known).

    The limit applies to the body as sent and to it decoded, so a small gzip bomb cannot
    fill the file.
    """
    raw = message.raw_content
    if raw is None:
        if not declared:
            return None, None, None
        of = f" of {wire_size} bytes" if wire_size is not None else ""
        return None, (f"{what}{of} streamed through (larger than proxy.body_buffer_limit, "
                      "or never read): not recorded"), None
    decoded_size: int | None = len(raw)
    coding = message.headers.get("content-encoding", "")
    if coding and len(raw) <= max_body_size:
        try:
            decoded_size = len(encoding.decode(raw, coding))
        except Exception:  # noqa: BLE001 -- recorded as sent; har_entry says why
            decoded_size = None
    size = max(len(raw), decoded_size or 0)
    if size > max_body_size:
        return None, (f"{what} of {size} bytes is over max_body_size ({max_body_size}): "
                      "not recorded"), decoded_size
    return raw, None, decoded_size
