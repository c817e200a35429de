"""``/api/traffic``: list, search, stats, one flow, its bodies, annotations, deletes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nectoproxy.store import (
    MARK_COLOURS,
    UNSET,
    Direction,
    Filter,
    FilterError,
    FlowRecord,
    FlowStore,
    parse_filter,
)
from nectoproxy.store.sorting import SORTS, SortCursor, check_cursor
from nectoproxy.web import decoding
from nectoproxy.web.common import (
    ApiError,
    Param,
    Reply,
    Routes,
    WebContext,
    context,
    path_int,
    path_param,
    query_flag,
    query_int,
    read_json,
)
from nectoproxy.web.schemas import ref
from nectoproxy.web.streaming import ThreadedStreamResponse

routes = Routes("traffic")

MAX_LIMIT = 1000
#: What a captured body is served with: it may be a page with scripts, and must not run as
#: this origin (which holds the token cookie).
BODY_HEADERS = {"content-security-policy": "sandbox; default-src 'none'"}

SESSION_PARAM = Param("sessionId", {"type": "integer"}, "The session (default: the active one).")
FILTER_PARAM = Param("filter", {"type": "string"}, "A filter expression (docs/store.md).")
LIST_PARAMS = (
    SESSION_PARAM, FILTER_PARAM,
    Param("search", {"type": "string"},
          "Text the URL, headers, bodies, tags or comment contain (any case)."),
    Param("limit", {"type": "integer", "minimum": 1, "default": 100, "maximum": MAX_LIMIT},
          "Entries per page (at most 1000; more is cut to 1000)."),
    Param("cursor", {"type": ["integer", "string"]},
          "The `next` of the previous page (with `sort`: the JSON text `[key, seq]` of the "
          "row to continue after, such as `[404,1812]` or `[null,1790]`)."),
    Param("order", {"enum": ["newest", "oldest"], "default": "newest"},
          "Newest first, or oldest; with `sort`: descending, or ascending."),
    Param("sort", {"enum": list(SORTS), "default": "time"},
          "The column to sort by (ties in arrival order; a missing value sorts lowest). "
          "`time` is arrival order."),
    Param("position", {"type": "integer", "minimum": 0},
          "With `sort`, instead of `cursor`: the page that starts at this 0-based position "
          "(a jump into the list; page on from it with cursors)."),
    Param("methods", {"type": "string"}, "Comma-separated methods (the original's parameter; "
          "the same as `method:` terms joined by `or`)."),
    Param("statusCodes", {"type": "string"}, "Comma-separated statuses: 404, 4xx, 400-499."),
    Param("hosts", {"type": "string"}, "Comma-separated host names (`*.example.com` too)."),
)
ID_PARAM = path_param("id", "A flow id (32 hex digits).")
NOT_FOUND = Reply("No such flow or session.", ref("Error"))
BAD = Reply("An invalid parameter or filter.", ref("Error"))
_SHORTHANDS = (("methods", "method"), ("statusCodes", "status"), ("hosts", "host"))


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse(text: str, parameter: str) -> Filter:
    try:
        return parse_filter(text)
    except FilterError as exc:
        raise ApiError(400, exc.message, position=exc.position, parameter=parameter) from None


def request_filter(request: Request) -> Filter:
    """``filter`` together with the original API's ``methods``, ``statusCodes``, ``hosts``."""
    text = request.query_params.get("filter", "")
    _parse(text, "filter")  # positions refer to what the caller wrote
    parts = [f"({text})"] if text.strip() else []
    for name, field in _SHORTHANDS:
        values = [v.strip() for v in request.query_params.get(name, "").split(",") if v.strip()]
        if values:
            group = " or ".join(f"{field}:{_quoted(v)}" for v in values)
            _parse(group, name)
            parts.append(f"({group})")
    return _parse(" and ".join(parts), "filter")


async def session_param(ctx: WebContext, session_id: int | None) -> int | None:
    if session_id is not None and await ctx.run(ctx.store.get_session, session_id) is None:
        raise ApiError(404, f"no session {session_id}")
    return session_id


def _sort_cursor(request: Request, sort: str) -> SortCursor | None:
    raw = request.query_params.get("cursor")
    if not raw:
        return None
    try:
        return check_cursor(sort, json.loads(raw))
    except ValueError as exc:  # (json's errors are ValueErrors too)
        raise ApiError(400, f"cursor: {exc} (the `next` of the previous page)",
                       parameter="cursor") from None


async def _page(request: Request, search: str | None) -> Response:
    ctx = context(request)
    if query_int(request, "offset", 0):
        raise ApiError(400, "offset is not supported: pass the previous page's `next` as cursor")
    order = request.query_params.get("order", "newest")
    if order not in ("newest", "oldest"):
        raise ApiError(400, "order must be newest or oldest")
    session_id = await session_param(ctx, query_int(request, "sessionId"))
    parsed = request_filter(request)
    limit = query_int(request, "limit", 100, minimum=1, maximum=MAX_LIMIT)
    sort = request.query_params.get("sort", "time") or "time"
    if sort not in SORTS:
        raise ApiError(400, f"sort must be one of {', '.join(SORTS)}")
    position = query_int(request, "position")
    if position is not None and (sort == "time" or "cursor" in request.query_params):
        raise ApiError(400, "position is for a sorted list (sort=...), instead of a cursor",
                       parameter="position")
    if sort != "time":
        key_cursor = _sort_cursor(request, sort)

        def sorted_page() -> dict[str, Any]:
            flows, after = ctx.store.list_sorted(sort, session_id, parsed, search,
                                                 limit or 100, key_cursor, order, position)
            return {"entries": [f.to_json() for f in flows],
                    "next": None if after is None else json.dumps(list(after))}

        return JSONResponse(await ctx.run(sorted_page))
    cursor = query_int(request, "cursor")

    def page() -> dict[str, Any]:
        flows, next_cursor = ctx.store.list_flows(session_id, parsed, search, limit or 100,
                                                  cursor, order)
        return {"entries": [f.to_json() for f in flows], "next": next_cursor}

    return JSONResponse(await ctx.run(page))


@routes.route("GET", "/api/traffic", "A page of flows, newest first.", params=LIST_PARAMS,
              replies={200: Reply("A page.", ref("TrafficPage")), 400: BAD, 404: NOT_FOUND})
async def list_traffic(request: Request) -> Response:
    return await _page(request, request.query_params.get("search"))


@routes.route("GET", "/api/traffic/search", "Flows containing some text (as `search`).",
              params=(Param("q", {"type": "string"}, "The text.", required=True), *LIST_PARAMS),
              replies={200: Reply("A page.", ref("TrafficPage")), 400: BAD, 404: NOT_FOUND})
async def search_traffic(request: Request) -> Response:
    text = request.query_params.get("q") or request.query_params.get("search")
    if not text:
        raise ApiError(400, "q (the text to search for) is required")
    return await _page(request, text)


@routes.route("GET", "/api/traffic/stats/{sessionId}", "Counts over a session's flows.",
              params=(path_param("sessionId", "A session id.", {"type": "integer"}),
                      FILTER_PARAM, Param("top", {"type": "integer", "default": 10},
                                          "How many hosts and content types.")),
              replies={200: Reply("The counts.", ref("Stats")), 400: BAD, 404: NOT_FOUND})
async def stats(request: Request) -> Response:
    ctx = context(request)
    session_id = await session_param(ctx, path_int(request, "sessionId"))
    parsed = request_filter(request)
    top = query_int(request, "top", 10, minimum=1, maximum=100) or 10
    result = await ctx.run(ctx.store.stats, session_id, parsed, top)
    return JSONResponse(result.to_json())


@routes.route("DELETE", "/api/traffic/session/{sessionId}", "Delete every flow of a session.",
              params=(path_param("sessionId", "A session id.", {"type": "integer"}),),
              replies={200: Reply("How many were deleted.", ref("Deleted")), 404: NOT_FOUND})
async def clear_session(request: Request) -> Response:
    ctx = context(request)
    session_id = await session_param(ctx, path_int(request, "sessionId"))
    assert session_id is not None
    return JSONResponse({"deleted": await ctx.run(ctx.store.delete_session_flows, session_id)})


async def flow_or_404(ctx: WebContext, flow_id: str) -> FlowRecord:
    record = await ctx.run(ctx.store.get_flow, flow_id)
    if record is None:
        raise ApiError(404, f"no flow {flow_id}")
    return record


@routes.route("GET", "/api/traffic/{id}", "Everything about a flow except its bodies.",
              params=(ID_PARAM,),
              replies={200: Reply("The flow.", ref("FlowRecord")), 404: NOT_FOUND})
async def get_flow(request: Request) -> Response:
    record = await flow_or_404(context(request), request.path_params["id"])
    return JSONResponse(record.to_json())


@routes.route("DELETE", "/api/traffic/{id}", "Delete a flow with its bodies.",
              params=(ID_PARAM,),
              replies={200: Reply("Deleted.", ref("Deleted")), 404: NOT_FOUND})
async def delete_flow(request: Request) -> Response:
    ctx = context(request)
    flow_id = request.path_params["id"]
    if not await ctx.run(ctx.store.delete_flow, flow_id):
        raise ApiError(404, f"no flow {flow_id}")
    return JSONResponse({"deleted": True})


@routes.route("PATCH", "/api/traffic/{id}", "Set a flow's mark, tags and comment.",
              params=(ID_PARAM,), body=ref("Annotations"), body_required=True,
              replies={200: Reply("The flow's summary.", ref("FlowSummary")),
                       400: BAD, 404: NOT_FOUND})
async def annotate(request: Request) -> Response:
    ctx = context(request)
    data = await read_json(request)
    unknown = set(data) - {"mark", "tags", "comment"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}; "
                       "expected mark, tags, comment")
    mark = data.get("mark", UNSET)
    if mark is not UNSET and mark is not None and mark not in MARK_COLOURS:
        raise ApiError(400, f"unknown mark {mark!r}: expected one of "
                       f"{', '.join(MARK_COLOURS)} or null")
    tags = data.get("tags", UNSET)
    if tags is not UNSET and not (isinstance(tags, list)
                                  and all(isinstance(t, str) for t in tags)):
        raise ApiError(400, "tags must be a list of strings")
    comment = data.get("comment", UNSET)
    if comment is not UNSET and not isinstance(comment, str):
        raise ApiError(400, "comment must be a string")
    flow_id = request.path_params["id"]
    summary = await ctx.run(ctx.store.annotate, flow_id, mark=mark, tags=tags, comment=comment)
    if summary is None:
        raise ApiError(404, f"no flow {flow_id}")
    return JSONResponse(summary.to_json())


# -- bodies -----------------------------------------------------------------------------------


def _header(headers: list[tuple[str, str]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key.lower() == name:
            return value
    return None


def _probe(store: FlowStore, flow_id: str, direction: Direction, coding: str) -> None:
    """Decode the start of a body, so a body that is not what it claims is a 415, not a
    connection cut after a 200."""
    stream = decoding.decode_stream(store.iter_body(flow_id, direction), coding)
    try:
        next(stream, None)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


async def _body(request: Request, direction: Direction) -> Response:
    ctx = context(request)
    flow_id = request.path_params["id"]
    record = await flow_or_404(ctx, flow_id)
    if direction == "request":
        coding, truncated = record.request_body_encoding, record.request_truncated
        media = _header(record.request_headers, "content-type")
    else:
        coding, truncated = record.response_body_encoding, record.response_truncated
        media = _header(record.response_headers, "content-type") or record.content_type
    headers = dict(BODY_HEADERS)
    if truncated:
        headers["x-nectoproxy-truncated"] = "1"
    store = ctx.store
    if query_flag(request, "decoded") and decoding.codings(coding):
        try:
            decoding.check(coding)
            await ctx.run(_probe, store, flow_id, direction, coding)
        except decoding.DecodeError as exc:
            raise ApiError(415, f"the {direction} body cannot be decoded: {exc}",
                           encoding=coding) from None

        def make() -> Iterator[bytes]:
            return decoding.decode_stream(store.iter_body(flow_id, direction), coding)
    else:
        if coding:
            headers["x-nectoproxy-content-encoding"] = coding

        def make() -> Iterator[bytes]:
            return store.iter_body(flow_id, direction)

    return ThreadedStreamResponse(make, limiter=ctx.stream_limiter, headers=headers,
                                  media_type=media or "application/octet-stream")


_BODY_PARAMS = (ID_PARAM, Param("decoded", {"type": "boolean"},
                                "1: undo the Content-Encoding (gzip, deflate, br, zstd)."))
_BODY_REPLIES = {
    200: Reply("The body as stored (`X-NectoProxy-Truncated: 1` if cut at max_body_size; "
               "`X-NectoProxy-Content-Encoding` names the coding of undecoded bytes).",
               {"type": "string", "format": "binary"}, "application/octet-stream"),
    404: NOT_FOUND, 415: Reply("The Content-Encoding cannot be undone.", ref("Error")),
}


@routes.route("GET", "/api/traffic/{id}/request/body", "The request body.",
              params=_BODY_PARAMS, replies=_BODY_REPLIES)
async def request_body(request: Request) -> Response:
    return await _body(request, "request")


@routes.route("GET", "/api/traffic/{id}/response/body", "The response body.",
              params=_BODY_PARAMS, replies=_BODY_REPLIES)
async def response_body(request: Request) -> Response:
    return await _body(request, "response")

