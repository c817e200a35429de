"""What the actions do to a flow: answers (mock, block, map_local), routing, changes, pacing."""

from __future__ import annotations

import logging
import mimetypes
import random
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from nectoproxy import Request, Response
from nectoproxy_plugin_rules.local_files import find_local_file
from nectoproxy_plugin_rules.model import Block, Delay, MapLocal, MapRemote, Mock, Modify, Rule

log = logging.getLogger("nectoproxy.rules")


def delay_seconds(delay: Delay) -> float:
    """The delay for one request: ``ms`` plus or minus up to ``variance_ms``, never negative."""
    spread = random.uniform(-delay.variance_ms, delay.variance_ms) if delay.variance_ms else 0.0
    return max(0.0, delay.ms + spread) / 1000


def block_response(block: Block, rule: Rule) -> Response:
    return Response.make(block.status, block.body or f"Blocked by NectoProxy rule {rule.name!r}\n")


async def mock_response(mock: Mock, rule: Rule) -> Response:
    headers = list(mock.headers)
    if mock.body_file is not None:
        try:
            body = await anyio.to_thread.run_sync(mock.body_file.read_bytes)
        except OSError as exc:
            log.error("rule %r: cannot read body_file %s: %s", rule.name, mock.body_file,
                      exc.strerror)
            return Response.make(500, f"NectoProxy rule {rule.name!r}: its body_file cannot be "
                                      "read\n")
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", _content_type(mock.body_file)))
    else:
        body = mock.body or b""
    return Response.make(mock.status, body, headers)


async def local_response(local: MapLocal, pathname: str) -> Response:
    """The file ``pathname`` names under the folder (or the one file), else a 404."""
    found = await anyio.to_thread.run_sync(_read_local, local, pathname)
    if found is None:
        return Response.make(404, f"Not found: {pathname}\n")
    path, body = found
    return Response.make(200, body, [("Content-Type", _content_type(path)), *local.headers])


def _read_local(local: MapLocal, pathname: str) -> tuple[Path, bytes] | None:
    path = find_local_file(local, pathname)
    if path is None:
        return None
    try:
        return path, path.read_bytes()
    except OSError as exc:
        log.warning("map_local: cannot read %s: %s", path, exc.strerror)
        return None


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def remap(request: Request, target: MapRemote) -> None:
    """Send the request to ``target`` (its path and query appended to the target's, unless
    ``keep_path`` is false: then the target's path and query replace them)."""
    parts = urlsplit(target.url)
    if target.keep_path:
        path = parts.path.rstrip("/") + request.pathname
        query = "&".join(q for q in (parts.query, request.query_string) if q)
    else:
        path, query = parts.path or "/", parts.query
    request.url = f"{parts.scheme}://{parts.netloc}{path}" + (f"?{query}" if query else "")


def modify_head(message: Request | Response, modify: Modify) -> None:
    """Headers, query parameters (requests) and status (responses); not the body."""
    for name in modify.remove_headers:
        if name in message.headers:
            del message.headers[name]
    for name, value in modify.set_headers:
        message.headers[name] = value
    if isinstance(message, Request) and (modify.remove_query or modify.set_query):
        query = message.query
        for name in modify.remove_query:
            if name in query:
                del query[name]
        for name, value in modify.set_query:
            query[name] = value
    if isinstance(message, Response) and modify.status is not None:
        message.status_code = modify.status
        message.reason = HTTPStatus(modify.status).phrase if modify.status in _KNOWN else ""


_KNOWN = frozenset(s.value for s in HTTPStatus)


def modify_body(message: Request | Response, modify: Modify, rule: Rule) -> None:
    """Replace the body and/or find-and-replace in it (as text, in the message's charset)."""
    if not modify.changes_body:
        return
    if message.streamed:
        log.warning("rule %r: the body is larger than proxy.body_buffer_limit and streams "
                    "through unchanged", rule.name)
        return
    try:
        content = message.content
    except ValueError as exc:
        log.warning("rule %r: body left unchanged: %s", rule.name, exc)
        return
    assert content is not None
    if modify.body is not None:
        content = modify.body
    if modify.replace:
        charset = message.charset
        try:
            text = content.decode(charset)
        except (UnicodeDecodeError, LookupError):
            log.warning("rule %r: the body is not %s text; find-and-replace skipped",
                        rule.name, charset)
        else:
            for item in modify.replace:
                text = (item.regex.sub(item.replace, text) if item.regex is not None
                        else text.replace(item.find, item.replace))
            content = text.encode(charset)
    message.content = content


#: How much time one slice of a paced body is worth: smaller is smoother, larger wakes less.
SLICE_SECONDS = 0.05
MAX_SLICE = 64 * 1024


class Pacer:
    """A chunk filter that sends the body at ``bytes_per_second``, in small slices.

    It behaves like a link of that speed: each slice is due when the previous one has gone
    through, and is sent then (a chunk is cut into slices worth about 50 ms each, yielded one
    by one, so the bytes arrive steadily). Idle time is not saved up for a burst later, and
    several pacers in a row settle at the slowest rate.
    """

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = bytes_per_second
        self.slice_size = min(MAX_SLICE, max(1, int(bytes_per_second * SLICE_SECONDS)))
        self._free_at = 0.0

    def __call__(self, chunk: bytes) -> AsyncIterator[bytes]:
        return self._slices(chunk)

    async def _slices(self, chunk: bytes) -> AsyncIterator[bytes]:
        for offset in range(0, len(chunk), self.slice_size):
            piece = chunk[offset:offset + self.slice_size]
            now = time.monotonic()
            self._free_at = max(self._free_at, now) + len(piece) / self.rate
            await anyio.sleep(self._free_at - now)
            yield piece
