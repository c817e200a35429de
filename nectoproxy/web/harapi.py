"""``/api/har``: a session or chosen flows as HAR 1.2 (streamed), and HAR files imported as
new sessions. The HAR itself is :mod:`nectoproxy.har`, the one implementation."""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nectoproxy import __version__, har
from nectoproxy.store import FlowStore, parse_filter
from nectoproxy.web.common import (
    ApiError,
    Param,
    Reply,
    Routes,
    context,
    path_int,
    path_param,
    read_body,
    read_json,
)
from nectoproxy.web.schemas import array, obj, ref
from nectoproxy.web.streaming import ThreadedStreamResponse
from nectoproxy.web.traffic import FILTER_PARAM, session_param

routes = Routes("har")

#: The largest HAR file an import reads (it is parsed whole).
MAX_IMPORT = 256 * 1024 * 1024
MAX_IDS = 100_000
_HAR = Reply("A HAR 1.2 document.", ref("Har"))


def _attachment(name: str) -> dict[str, str]:
    return {"content-disposition": f'attachment; filename="{name}"'}


@routes.route("GET", "/api/har/export/{sessionId}", "A session as HAR (streamed).",
              params=(path_param("sessionId", "A session id.", {"type": "integer"}),
                      FILTER_PARAM),
              replies={200: _HAR, 400: Reply("A bad filter.", ref("Error")),
                       404: Reply("No such session.", ref("Error"))})
async def export_session(request: Request) -> Response:
    ctx = context(request)
    session_id = await session_param(ctx, path_int(request, "sessionId"))
    assert session_id is not None
    text = request.query_params.get("filter") or None
    parse_filter(text)  # a FilterError is a 400 with its position before anything is sent
    store = ctx.store
    return ThreadedStreamResponse(lambda: har.export_session(store, session_id, text),
                                  limiter=ctx.stream_limiter, media_type="application/json",
                                  headers=_attachment(f"session-{session_id}.har"))


def _entries(store: FlowStore, ids: list[str]) -> Iterator[dict[str, Any]]:
    for flow_id in ids:
        record = store.get_flow(flow_id)
        if record is None:
            continue  # deleted since the request was checked
        request = store.get_body(flow_id, "request")
        response = store.get_body(flow_id, "response")
        yield har.har_entry(record, None if request is None else request[0],
                            None if response is None else response[0])


def _missing(store: FlowStore, ids: list[str]) -> list[str]:
    return [flow_id for flow_id in ids if store.get_flow(flow_id) is None]


@routes.route("POST", "/api/har/export", "Chosen flows as HAR (streamed), in the order given.",
              body=obj({"ids": array({"type": "string"})}), body_required=True,
              replies={200: _HAR, 400: Reply("No ids.", ref("Error")),
                       404: Reply("Some flows do not exist.", ref("Error"))})
async def export_flows(request: Request) -> Response:
    ctx = context(request)
    data = await read_json(request, limit=16 * 1024 * 1024)
    ids = data.get("ids")
    if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise ApiError(400, "ids (a list of flow ids) is required")
    if len(ids) > MAX_IDS:
        raise ApiError(400, f"at most {MAX_IDS} ids at a time")
    ids = list(dict.fromkeys(ids))
    missing = await ctx.run(_missing, ctx.store, ids)
    if missing:
        raise ApiError(404, f"no flow {', '.join(missing[:10])}"
                       + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""),
                       missing=missing[:100])
    store = ctx.store

    def document() -> Iterator[str]:
        return har.iter_har_json(_entries(store, ids), version=__version__)

    return ThreadedStreamResponse(document, limiter=ctx.stream_limiter,
                                  media_type="application/json",
                                  headers=_attachment("flows.har"))


def _multipart_file(content_type: str, body: bytes) -> tuple[bytes, str | None]:
    """The uploaded file of a multipart/form-data body and its file name."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if message.is_multipart():
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            filename = part.get_filename()
            if filename or name in ("file", "har"):
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    return payload, filename
    raise ApiError(400, "the multipart body has no file (a part named file, or with a filename)")


@routes.route("POST", "/api/har/import", "Import a HAR file as a new session (the file as the "
              "body, or a multipart/form-data upload).",
              params=(Param("name", {"type": "string"},
                            "The new session's name (default: Imported <file or date>)."),),
              body=ref("Har"), body_required=True,
              body_content=("application/json", "multipart/form-data"),
              replies={201: Reply("The new session.", ref("Session")),
                       400: Reply("Not a HAR file (the message names the entry).",
                                  ref("Error")),
                       413: Reply("Larger than 256 MiB.", ref("Error"))})
async def import_har(request: Request) -> Response:
    ctx = context(request)
    body = await read_body(request, MAX_IMPORT)
    content_type = request.headers.get("content-type", "")
    name = request.query_params.get("name") or None
    if content_type.lower().startswith("multipart/"):
        body, filename = _multipart_file(content_type, body)
        if name is None and filename:
            name = f"Imported {filename}"[:200]
    try:
        session = await ctx.run(har.import_har, ctx.store, body, name)
    except har.HarError as exc:
        raise ApiError(400, str(exc)) from None
    return JSONResponse(session.to_json(), status_code=201)
