"""Bodies in a HAR file: response ``content`` and request ``postData``.

Text is stored as text (Content-Encoding undone, decoded with the declared charset); anything
else as base64. A body larger than ``max_body_size`` is described (size, ``_truncated``,
``comment``) but its bytes are left out; this only concerns the file, never what is relayed.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import parse_qsl

from nectoproxy import Request, Response

Message = Request | Response

_TEXT_TYPES = re.compile(
    r"^(text/|application/(json|javascript|ecmascript|xml|xhtml\+xml|x-www-form-urlencoded|"
    r"graphql|ld\+json|manifest\+json)\b|[^;]*\+(json|xml)\b|image/svg\+xml\b)",
    re.IGNORECASE,
)
_CHARSET = re.compile(r"charset=[\"']?([\w.:-]+)", re.IGNORECASE)
UNKNOWN_MIME = "x-unknown"  # what Chrome DevTools writes when there is no Content-Type


def is_textual(mime_type: str) -> bool:
    return bool(_TEXT_TYPES.match(mime_type.strip()))


def charset_of(mime_type: str) -> str | None:
    match = _CHARSET.search(mime_type)
    return match.group(1) if match else None


def as_text(data: bytes, mime_type: str) -> str | None:
    """``data`` decoded if the type is textual (or unknown) and it decodes cleanly, else None."""
    if mime_type and not is_textual(mime_type):
        return None
    charset = charset_of(mime_type) or "utf-8"
    for candidate in dict.fromkeys((charset, "utf-8")):
        try:
            return data.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    return None


def body_bytes(text: str, encoding: str | None, mime_type: str) -> bytes:
    """The inverse of what the recorder wrote: bytes back from ``text`` (+ ``encoding``)."""
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"invalid base64 body: {exc}") from None
    try:
        return text.encode(charset_of(mime_type) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return text.encode("utf-8")


def _decoded(message: Message) -> tuple[bytes, str | None]:
    """The body with its Content-Encoding undone, or as sent plus why it could not be."""
    raw = message.raw_content or b""
    try:
        return message.content or b"", None
    except ValueError as exc:
        return raw, f"recorded as sent: {exc}"


def response_content(message: Message, wire_size: int, max_body_size: int) -> dict[str, Any]:
    """The HAR ``content`` object of a response."""
    mime_type = message.headers.get("content-type", "") or UNKNOWN_MIME
    content: dict[str, Any] = {"size": 0, "mimeType": mime_type}
    raw = message.raw_content
    if raw is None:
        content["size"] = wire_size
        return _left_out(content, f"body of {wire_size} bytes streamed through (larger than "
                                  "proxy.body_buffer_limit): not recorded")
    if len(raw) > max_body_size:
        content["size"] = len(raw)
        return _left_out(content, f"body of {len(raw)} bytes (as sent) is over max_body_size "
                                  f"({max_body_size}): not recorded")
    data, problem = _decoded(message)
    content["size"] = len(data)
    if problem is None and "content-encoding" in message.headers:
        content["compression"] = len(data) - len(raw)
    if len(data) > max_body_size:
        return _left_out(content, f"body of {len(data)} bytes is over max_body_size "
                                  f"({max_body_size}): not recorded")
    text = as_text(data, "" if mime_type == UNKNOWN_MIME else mime_type)
    if text is None:
        content["text"] = base64.b64encode(data).decode("ascii")
        content["encoding"] = "base64"
    else:
        content["text"] = text
    if problem:
        content["comment"] = problem
    return content


def post_data(message: Message, declared: bool, max_body_size: int) -> dict[str, Any] | None:
    """The HAR ``postData`` object of a request, or None when it had no body.

    ``text`` is always present, because Chrome DevTools' importer reads only ``text``;
    ``params`` is added for URL-encoded forms, as Chrome's own export does. Bodies that are
    not text are stored as base64 with ``"_encoding": "base64"`` (HAR has no field for it).
    """
    mime_type = message.headers.get("content-type", "")
    raw = message.raw_content
    if raw is None:
        if not declared:
            return None
        return _left_out({"mimeType": mime_type, "text": ""},
                         "request body streamed through (or was never read): not recorded")
    if not raw:
        return None
    data, problem = _decoded(message)
    record: dict[str, Any] = {"mimeType": mime_type}
    if len(data) > max_body_size:
        record["text"] = ""
        return _left_out(record, f"request body of {len(data)} bytes is over max_body_size "
                                 f"({max_body_size}): not recorded")
    text = as_text(data, mime_type)
    if text is None:
        record["text"] = base64.b64encode(data).decode("ascii")
        record["_encoding"] = "base64"
    else:
        record["text"] = text
        if mime_type.lower().startswith("application/x-www-form-urlencoded"):
            record["params"] = [{"name": k, "value": v}
                                for k, v in parse_qsl(text, keep_blank_values=True)]
    if problem:
        record["comment"] = problem
    return record


def _left_out(record: dict[str, Any], why: str) -> dict[str, Any]:
    record["_truncated"] = True
    record["comment"] = why
    return record
