"""``/api/capture``: pause and resume capture.

Paused, the proxy serves every flow as usual but stores none (replays sent from the inspector
are still stored: they are asked for). The switch applies in every worker process within a
second (:mod:`nectoproxy.capturepause`) and lasts until resumed or until the proxy restarts.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nectoproxy.web.common import (
    ApiError,
    CaptureControl,
    Reply,
    Routes,
    WebContext,
    context,
    read_json,
)
from nectoproxy.web.schemas import obj, ref

routes = Routes("capture")

CAPTURE = obj({"paused": {"type": "boolean",
                          "description": "Flows are proxied but not stored."}})

def _control(ctx: WebContext) -> CaptureControl:
    if ctx.capture is None:
        raise ApiError(503, "nothing captures in this process: the inspector was started "
                       "without a capture plugin")
    return ctx.capture


@routes.route("GET", "/api/capture", "Whether capture is paused.",
              replies={200: Reply("The capture state.", CAPTURE), 503: Reply(
                  "No capture to control.", ref("Error"))})
async def get_capture(request: Request) -> Response:
    return JSONResponse({"paused": _control(context(request)).paused})


@routes.route("PUT", "/api/capture", "Pause or resume capture (every worker process, within "
              "a second; until the proxy restarts).", body=CAPTURE, body_required=True,
              replies={200: Reply("The capture state.", CAPTURE),
                       400: Reply("Not a boolean `paused`.", ref("Error")),
                       503: Reply("No capture to control.", ref("Error"))})
async def put_capture(request: Request) -> Response:
    ctx = context(request)
    control = _control(ctx)
    data = await read_json(request)
    paused = data.get("paused")
    if set(data) != {"paused"} or not isinstance(paused, bool):
        raise ApiError(400, 'expected {"paused": true} or {"paused": false}')
    await ctx.run(control.set_paused, paused)
    return JSONResponse({"paused": control.paused})
