"""``/api/websocket/{trafficId}``: a WebSocket flow's captured messages, and sending one.

The messages are read from the store (``FlowStore.websocket_messages``); sending goes into a
connection open now in this process (capture's ``websockets``, handed to ``create_app``), with
``flow.websocket.inject``: with ``workers = N``, only the connections of the process that
serves the inspector can be sent into.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nectoproxy.web.common import (
    ApiError,
    Param,
    Reply,
    Routes,
    context,
    path_int,
    path_param,
    query_int,
    read_json,
)
from nectoproxy.web.schemas import ref

routes = Routes("websocket")

MAX_LIMIT = 1000
#: Largest message the API sends (its JSON body carries it, base64 for binary).
MAX_SEND = 16 * 1024 * 1024

TRAFFIC_PARAM = path_param("trafficId", "The WebSocket flow's id (32 hex digits).")
FILTER_PARAMS = (
    Param("direction", {"enum": ["client", "server"]}, "Only messages the client (or the "
          "origin) sent."),
    Param("type", {"enum": ["text", "binary"]}, "Only text (or binary) messages."),
)
NOT_FOUND = Reply("No such flow (or message).", ref("Error"))
BAD = Reply("An invalid parameter.", ref("Error"))


def _filters(request: Request) -> dict[str, str | None]:
    direction = request.query_params.get("direction") or None
    type_ = request.query_params.get("type") or None
    if direction not in (None, "client", "server"):
        raise ApiError(400, f"unknown direction {direction!r}: expected client or server")
    if type_ not in (None, "text", "binary"):
        raise ApiError(400, f"unknown type {type_!r}: expected text or binary")
    return {"direction": direction, "type_": type_}


@routes.route("GET", "/api/websocket/{trafficId}/frames", "A page of a WebSocket flow's "
              "messages, oldest first (without content).",
              params=(TRAFFIC_PARAM, *FILTER_PARAMS,
                      Param("after", {"type": "integer"}, "The `next` of the previous page."),
                      Param("limit", {"type": "integer", "minimum": 1, "default": 100,
                                      "maximum": MAX_LIMIT}, "Messages per page.")),
              replies={200: Reply("The page.", ref("WebSocketFramePage")), 400: BAD,
                       404: NOT_FOUND})
async def frames(request: Request) -> Response:
    ctx = context(request)
    flow_id = request.path_params["trafficId"]
    limit = query_int(request, "limit", 100, minimum=1, maximum=MAX_LIMIT) or 100
    after = query_int(request, "after", 0) or 0
    page = await ctx.run(ctx.store.websocket_messages, flow_id, after=after, limit=limit + 1,
                         **_filters(request))
    if page is None:
        raise ApiError(404, f"no flow {flow_id}")
    shown = page[:limit]
    return JSONResponse({"frames": [e.to_json() for e in shown],
                         "next": shown[-1].id if len(page) > limit else None})


@routes.route("GET", "/api/websocket/{trafficId}/count", "How many messages a WebSocket flow "
              "has (filtered as the list is), and whether its connection is open here.",
              params=(TRAFFIC_PARAM, *FILTER_PARAMS),
              replies={200: Reply("The count.", ref("WebSocketCount")), 400: BAD,
                       404: NOT_FOUND})
async def count(request: Request) -> Response:
    ctx = context(request)
    flow_id = request.path_params["trafficId"]
    total = await ctx.run(ctx.store.websocket_message_count, flow_id, **_filters(request))
    if total is None:
        raise ApiError(404, f"no flow {flow_id}")
    live = ctx.websockets(flow_id) if ctx.websockets else None
    return JSONResponse({"count": total, "open": live is not None and live.open})


@routes.route("GET", "/api/websocket/{trafficId}/frame/{id}", "One message (or the opening or "
              "close) with its stored content: `content` for text, `contentBase64` otherwise.",
              params=(TRAFFIC_PARAM, path_param("id", "The message's id.",
                                                {"type": "integer"})),
              replies={200: Reply("The message.", ref("WebSocketFrame")), 404: NOT_FOUND})
async def frame(request: Request) -> Response:
    ctx = context(request)
    flow_id = request.path_params["trafficId"]
    event = await ctx.run(ctx.store.websocket_event, flow_id, path_int(request, "id"))
    if event is None:
        raise ApiError(404, f"no message {request.path_params['id']} in flow {flow_id}")
    return JSONResponse(event.to_json(content=True))


def _content(data: dict[str, Any]) -> str | bytes:
    text, encoded = data.get("content"), data.get("contentBase64")
    if (text is None) == (encoded is None):
        raise ApiError(400, "give the message as content (text) or contentBase64 (binary)")
    if text is not None:
        if not isinstance(text, str):
            raise ApiError(400, "content must be a string")
        return text
    if not isinstance(encoded, str):
        raise ApiError(400, "contentBase64 must be a string")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "contentBase64 is not valid base64") from None


@routes.route("POST", "/api/websocket/{trafficId}/send", "Send a message into an open "
              "WebSocket connection, to the origin or to the client.",
              params=(TRAFFIC_PARAM,), body=ref("WebSocketSend"), body_required=True,
              replies={200: Reply("Queued: it goes after any message being relayed that way.",
                                  ref("WebSocketSent")),
                       400: BAD, 404: NOT_FOUND,
                       409: Reply("The connection is not open (or is served by another "
                                  "worker process, or relayed unparsed).", ref("Error"))})
async def send(request: Request) -> Response:
    ctx = context(request)
    flow_id = request.path_params["trafficId"]
    data = await read_json(request, limit=MAX_SEND * 4 // 3 + 1024)
    to = data.get("to")
    if to not in ("client", "server"):
        raise ApiError(400, "to must be \"server\" (as if the client sent it) or \"client\"")
    content = _content(data)
    live = ctx.websockets(flow_id) if ctx.websockets else None
    if live is None or not live.open:
        if await ctx.run(ctx.store.get_flow, flow_id) is None:
            raise ApiError(404, f"no flow {flow_id}")
        raise ApiError(409, f"flow {flow_id} has no WebSocket connection open in this process")
    message = live.inject(content, to_client=to == "client")
    return JSONResponse({"sent": True, "to": to, "type": "text" if message.is_text else
                         "binary", "size": len(message.content)})
