"""Answer requests from a HAR file (``[plugins.har] replay = "recorded.har"``).

Entries are matched by method and URL (scheme and host case-insensitive, default ports
ignored, optionally the order of the query parameters too). When several entries match the
same request they are served in the order of the file, the last one again once all were used.
Entries that cannot be replayed faithfully are skipped: failed ones (status 0) and those whose
body was left out of the file. The file is read by :func:`nectoproxy.har.read_har`, so any HAR
NectoProxy can import can be replayed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from nectoproxy import ConfigError, Response, encoding
from nectoproxy.har import HarError, read_har
from nectoproxy.store import FlowRecord

log = logging.getLogger("nectoproxy.har")

_DEFAULT_PORTS = {"http": 80, "https": 443}
# The body is stored decoded, so the headers describing the wire form must not be replayed.
_DROPPED_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding",
                              "connection", "keep-alive"})


def match_key(method: str, url: str, ignore_query_order: bool) -> tuple[str, str]:
    """What a request and a recorded entry are compared by."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = 0
    query = parts.query
    if ignore_query_order and query:
        query = "&".join(sorted(query.split("&")))
    return method.upper(), f"{scheme}://{host}:{port}{parts.path or '/'}?{query}"


@dataclass(frozen=True)
class RecordedResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def make(self) -> Response:
        headers = [(k, v) for k, v in self.headers if k.lower() not in _DROPPED_HEADERS]
        response = Response.make(self.status, self.body, headers)
        response.reason = self.reason or response.reason
        return response


class ReplayIndex:
    """The replayable responses of one HAR file, by (method, URL)."""

    def __init__(self, ignore_query_order: bool = False) -> None:
        self.ignore_query_order = ignore_query_order
        self.responses: dict[tuple[str, str], list[RecordedResponse]] = defaultdict(list)
        self._served: dict[tuple[str, str], int] = defaultdict(int)
        self.skipped = 0

    @classmethod
    def load(cls, path: Path, ignore_query_order: bool = False) -> ReplayIndex:
        """Read a HAR file; ConfigError names the file (and entry) when it is unusable."""
        where = f"[plugins.har] replay: {path}"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
        index = cls(ignore_query_order)
        try:
            for record, _, body in read_har(data):
                index.add(record, body)
        except HarError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        log.info("har: replaying %d responses from %s (%d entries skipped)",
                 sum(map(len, index.responses.values())), path, index.skipped)
        return index

    def add(self, record: FlowRecord, body: bytes | None) -> None:
        """Add the response of one entry read by ``read_har``, or count it as skipped."""
        status = record.status
        if status is None or status < 100 or record.response_truncated or \
                (body is None and record.response_size_decoded):
            self.skipped += 1
            return
        body = body or b""
        if record.response_body_encoding:  # given as stored: send it decoded, as the others
            try:
                body = encoding.decode(body, record.response_body_encoding)
            except Exception:  # noqa: BLE001 -- any codec's error on a foreign body
                self.skipped += 1
                return
        headers = record.response_headers_sent if record.response_headers_sent is not None \
            else record.response_headers or []
        key = match_key(record.method, record.url, self.ignore_query_order)
        self.responses[key].append(
            RecordedResponse(status, record.reason or "", tuple(headers), body))

    def answer(self, method: str, url: str) -> Response | None:
        """A new Response for the next recorded answer to this request, or None."""
        key = match_key(method, url, self.ignore_query_order)
        recorded = self.responses.get(key)
        if not recorded:
            return None
        served = self._served[key]
        self._served[key] = served + 1
        return recorded[min(served, len(recorded) - 1)].make()

    def __len__(self) -> int:
        return sum(map(len, self.responses.values()))
