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

from nectoproxy.har.common import (
    HAR_TAIL,
    UNKNOWN_MIME,
    HarError,
    HarSource,
    iso_time,
    text_bytes,
)
from nectoproxy.har.read import (
    har_entries,
    read_entry,
    read_har,
)
from nectoproxy.har.store import (
    export_session,
    import_har,
    iter_session_entries,
)
from nectoproxy.har.write import (
    as_text,
    entry_json,
    har_entry,
    har_head,
    har_timings,
    iter_har_json,
    request_cookies,
    response_cookies,
)

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
