"""``POST /api/traffic/{id}/replay`` and ``POST /api/traffic/replay``: through the injected
:class:`~nectoproxy.web.replay.Replayer`, answered with the flow the replay made."""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nectoproxy.store import FlowRecord
from nectoproxy.web.common import ApiError, Reply, Routes, WebContext, context, read_json
from nectoproxy.web.messages import Outgoing, RequestError, apply_edits, from_record
from nectoproxy.web.schemas import ref
from nectoproxy.web.traffic import ID_PARAM, flow_or_404

routes = Routes("replay")

#: Longest the answer waits for the replayed flow to be in the store.
WAIT = 5.0
_POLL = 0.05
#: A replay's JSON body may carry an edited body (base64: 4/3 of it).
MAX_REPLAY_BODY = 64 * 1024 * 1024

_REPLIES = {
    200: Reply("The replay's result, with the new flow once it is stored.", ref("Replay")),
    400: Reply("An invalid edit.", ref("Error")),
    404: Reply("No such flow.", ref("Error")),
    409: Reply("The recorded body was truncated and no body was given.", ref("Error")),
    502: Reply("The proxy did not answer (`error` says why).", ref("Replay")),
    503: Reply("Replay is not available (no proxy to send through).", ref("Error")),
}


async def _stored(ctx: WebContext, flow_id: str) -> FlowRecord | None:
    """The new flow once the store has it complete (or as it is after :data:`WAIT`)."""
    record: FlowRecord | None = None
    with anyio.move_on_after(WAIT):
        while True:
            record = await ctx.run(ctx.store.get_flow, flow_id)
            if record is not None and (record.status is not None or record.error is not None):
                return record
            await anyio.sleep(_POLL)
    return record


async def _replay(ctx: WebContext, request: Outgoing, replay_of: str | None) -> Response:
    if ctx.replayer is None:
        raise ApiError(503, "replay is not available: the API runs without a proxy to send "
                       "requests through")
    result = await ctx.replayer.send(request.method, request.url, request.headers, request.body,
                                     replay_of)
    record = await _stored(ctx, result.id)
    data: dict[str, Any] = {"id": result.id, "replayOf": replay_of, "status": result.status,
                            "error": result.error}
    if record is not None:
        data["flow"] = record.to_json()
        data["error"] = data["error"] or record.error
    return JSONResponse(data, status_code=200 if result.status is not None else 502)


def _edited(base: Outgoing | None, edits: dict[str, Any]) -> tuple[Outgoing, bool]:
    try:
        return apply_edits(base, edits)
    except RequestError as exc:
        raise ApiError(400, str(exc)) from None


@routes.route("POST", "/api/traffic/replay", "Send a new request (composed) through the proxy.",
              body=ref("ReplayEdits"), body_required=True, replies=_REPLIES)
async def compose(request: Request) -> Response:
    ctx = context(request)
    edits = await read_json(request, limit=MAX_REPLAY_BODY)
    outgoing, _ = _edited(None, edits)
    return await _replay(ctx, outgoing, None)


@routes.route("POST", "/api/traffic/{id}/replay", "Send a flow's request again, as recorded or "
              "with edits.", params=(ID_PARAM,), body=ref("ReplayEdits"), replies=_REPLIES)
async def replay(request: Request) -> Response:
    ctx = context(request)
    edits = await read_json(request, limit=MAX_REPLAY_BODY, optional=True)
    flow_id = request.path_params["id"]
    record = await flow_or_404(ctx, flow_id)
    stored = await ctx.run(ctx.store.get_body, flow_id, "request")
    body, truncated = stored if stored is not None else (b"", False)
    outgoing, body_given = _edited(from_record(record, body), edits)
    if truncated and not body_given:
        raise ApiError(409, f"the recorded request body was truncated in storage ({len(body)} "
                       "bytes kept): give the body (body or bodyBase64) to replay it")
    return await _replay(ctx, outgoing, record.id)
