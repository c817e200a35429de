"""``/api/breakpoints``: breakpoints one by one, and the flows paused at them.

Breakpoints are the ``breakpoints`` settings (``/api/settings/breakpoints``, whose value is
``{"breakpoints": [...]}``, kept in ``$NECTOPROXY_HOME/breakpoints.toml``); each call here reads
that value, changes the list and puts it back under the settings' lock, as ``/api/rules``
does. The paused flows live in the process that serves them (:class:`nectoproxy.breakpoints.
PausedFlows`; a worker process's are known here through its pipe): listed, and resumed with
``continue`` (with modifications), ``abort`` or ``mock``. The event socket announces
``breakpoint:hit`` and ``breakpoint:resumed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nectoproxy.breakpoints import (
    ACTIONS,
    PHASES,
    BreakpointSettings,
    PausedFlows,
    ResumeError,
    WorkerUnavailable,
)
from nectoproxy.settings import SettingsRegistry
from nectoproxy.web.common import ApiError, Reply, Routes, context, path_param, read_json
from nectoproxy.web.rulesapi import merge_patch
from nectoproxy.web.schemas import obj, ref
from nectoproxy.web.settingsapi import INVALID, provider, read, update

routes = Routes("breakpoints")
SETTINGS = "breakpoints"

ID = path_param("id", "The breakpoint's id.")
FLOW_ID = path_param("id", "The paused flow's id.")
BREAKPOINT = obj({"id": {"type": "string"}, "name": {"type": "string"},
                  "filter": {"type": "string", "description": "A filter expression (heads "
                             "only: body terms match nothing); empty: every flow."},
                  "phase": {"enum": list(PHASES)}, "enabled": {"type": "boolean"}},
                 required=("id", "filter", "phase", "enabled"))
BREAKPOINT_LIST = obj({"breakpoints": {"type": "array", "items": BREAKPOINT},
                       "file": {"type": "string"}, "error": {"type": "string"}},
                      required=("breakpoints",))
#: What a paused flow's request and response share.
_MESSAGE: dict[str, Any] = {
    "headers": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
    "body": {"type": ["string", "null"], "description": "Decoded text; null while it "
             "streams (larger than proxy.body_buffer_limit)."}}
PAUSED = obj({
    "id": {"type": "string", "description": "The flow's id (as in /api/traffic)."},
    "phase": {"enum": ["request", "response"]}, "breakpointId": {"type": "string"},
    "pausedAt": {"type": "number"},
    "request": obj({**_MESSAGE, "method": {"type": "string"}, "url": {"type": "string"}}),
    "response": {"oneOf": [{"type": "null"}, obj({
        **_MESSAGE, "status": {"type": "integer"}, "reason": {"type": "string"}})]}},
    required=("id", "phase", "request"))
RESUME = obj({
    "action": {"enum": list(ACTIONS), "description": "continue (with `modifications`), "
               "abort (close the client's connection) or mock (answer with `modifications`: "
               "status, headers, body; the origin is not asked, or its answer is replaced)."},
    "modifications": {"type": "object", "description": "Request phase: method, url, headers "
                      "([[name, value], ...]), body (text). Response phase: status, headers, "
                      "body. Missing keys are left as they are."}})
NOT_FOUND = Reply("No breakpoints (the inspector was started without them), or no such "
                  "breakpoint.", ref("Error"))
UNAVAILABLE = Reply("The worker process holding a paused flow did not answer.", ref("Error"))
NOT_PAUSED = Reply("No flow with this id is paused (it was resumed, timed out, or its client "
                   "left).", ref("Error"))


def paused_flows(settings: SettingsRegistry | None) -> PausedFlows | None:
    """The paused-flow registry behind the ``breakpoints`` settings, if they are served."""
    found = settings.get(SETTINGS) if settings is not None else None
    return found.plugin.paused if isinstance(found, BreakpointSettings) else None


def _paused(request: Request) -> PausedFlows:
    ctx = context(request)
    provider(ctx, SETTINGS)  # (404 with the reason when there are none)
    found = paused_flows(ctx.settings)
    if found is None:
        raise ApiError(404, "no breakpoints")
    return found


async def _shown(registry: PausedFlows, flow_id: str | None = None) -> list[dict[str, Any]]:
    try:
        return await registry.shown(flow_id)
    except WorkerUnavailable as exc:
        raise ApiError(503, str(exc)) from None


def _body_breakpoint(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "file"}


def _find(value: dict[str, Any], ident: str) -> dict[str, Any]:
    for table in value["breakpoints"]:
        if table.get("id") == ident:
            return dict(table)
    raise ApiError(404, f"no breakpoint {ident!r}")


async def _change(request: Request, change: Callable[[list[dict[str, Any]]], Any]
                  ) -> tuple[Any, dict[str, Any]]:
    ctx = context(request)
    result: list[Any] = []

    def edit(value: dict[str, Any]) -> dict[str, Any]:
        if value.get("error"):
            raise ApiError(409, f"the breakpoints file cannot be read ({value['error']}): fix "
                           "it, or replace every breakpoint with PUT /api/settings/breakpoints")
        tables = [dict(t) for t in value["breakpoints"]]
        result.append(change(tables))
        return {"breakpoints": tables}

    new = await update(ctx, SETTINGS, edit)
    return result[0], new


@routes.route("GET", "/api/breakpoints", "The breakpoints, in file order.",
              replies={200: Reply("The breakpoints.", BREAKPOINT_LIST), 404: NOT_FOUND})
async def list_breakpoints(request: Request) -> Response:
    ctx = context(request)
    return JSONResponse(await read(ctx, provider(ctx, SETTINGS)))


@routes.route("POST", "/api/breakpoints", "Add a breakpoint (`filter`, `phase`: request, "
              "response or both, `enabled`, `name`); it applies from the next flow on.",
              body=BREAKPOINT, body_required=True,
              replies={201: Reply("The breakpoint, with its id.", BREAKPOINT), 400: INVALID,
                       404: NOT_FOUND})
async def create_breakpoint(request: Request) -> Response:
    table = _body_breakpoint(await read_json(request))
    table.pop("id", None)  # (made by the settings: unique)

    def add(tables: list[dict[str, Any]]) -> None:
        tables.append(table)

    _, new = await _change(request, add)
    return JSONResponse(new["breakpoints"][-1], status_code=201)


# (Before /api/breakpoints/{id}: a literal segment matches first.)
@routes.route("GET", "/api/breakpoints/paused", "The flows paused at breakpoints now, oldest "
              "first.", replies={200: Reply("The paused flows.", obj(
                  {"paused": {"type": "array", "items": PAUSED}})), 404: NOT_FOUND,
                  503: UNAVAILABLE})
async def list_paused(request: Request) -> Response:
    return JSONResponse({"paused": await _shown(_paused(request))})


@routes.route("GET", "/api/breakpoints/paused/{id}", "One paused flow.", params=(FLOW_ID,),
              replies={200: Reply("The paused flow.", PAUSED), 404: NOT_PAUSED,
                       503: UNAVAILABLE})
async def get_paused(request: Request) -> Response:
    found = await _shown(_paused(request), request.path_params["id"])
    if not found:
        raise ApiError(404, f"flow {request.path_params['id']!r} is not paused")
    return JSONResponse(found[0])


@routes.route("POST", "/api/breakpoints/paused/{id}/resume", "Resume a paused flow: "
              "`continue` with `modifications`, `abort`, or `mock`.", params=(FLOW_ID,),
              body=RESUME, body_required=True,
              replies={200: Reply("The flow as it was resumed.", PAUSED),
                       400: Reply("An unknown action or modifications that cannot apply "
                                  "(`field` says which); the flow stays paused.",
                                  ref("Error")),
                       404: NOT_PAUSED, 503: UNAVAILABLE})
async def resume_paused(request: Request) -> Response:
    registry = _paused(request)
    data = await read_json(request)
    action = data.get("action", "continue")
    changes = data.get("modifications") or {}
    if not isinstance(changes, dict):
        raise ApiError(400, "modifications: expected an object", field="modifications")
    flow_id = request.path_params["id"]
    try:
        resumed = await registry.resume_anywhere(flow_id, action, changes)
    except KeyError:
        raise ApiError(404, f"flow {flow_id!r} is not paused") from None
    except ResumeError as exc:
        raise ApiError(400, exc.message, field=exc.field) from None
    except WorkerUnavailable as exc:
        raise ApiError(503, str(exc)) from None
    return JSONResponse(resumed)


@routes.route("GET", "/api/breakpoints/{id}", "One breakpoint.", params=(ID,),
              replies={200: Reply("The breakpoint.", BREAKPOINT), 404: NOT_FOUND})
async def get_breakpoint(request: Request) -> Response:
    ctx = context(request)
    return JSONResponse(_find(await read(ctx, provider(ctx, SETTINGS)),
                              request.path_params["id"]))


async def _replace(request: Request, make: Callable[[dict[str, Any]], dict[str, Any]]
                   ) -> Response:
    ident = request.path_params["id"]

    def replace(tables: list[dict[str, Any]]) -> None:
        for n, table in enumerate(tables):
            if table.get("id") == ident:
                tables[n] = {**make(table), "id": ident}
                return
        raise ApiError(404, f"no breakpoint {ident!r}")

    _, new = await _change(request, replace)
    return JSONResponse(_find(new, ident))


@routes.route("PUT", "/api/breakpoints/{id}", "Replace a breakpoint (it keeps its id).",
              params=(ID,), body=BREAKPOINT, body_required=True,
              replies={200: Reply("The breakpoint.", BREAKPOINT), 400: INVALID,
                       404: NOT_FOUND})
async def put_breakpoint(request: Request) -> Response:
    table = _body_breakpoint(await read_json(request))
    return await _replace(request, lambda old: table)


@routes.route("PATCH", "/api/breakpoints/{id}", "Change some of a breakpoint's keys (a JSON "
              "merge patch), e.g. `{\"enabled\": false}`.", params=(ID,), body=BREAKPOINT,
              body_required=True,
              replies={200: Reply("The breakpoint.", BREAKPOINT), 400: INVALID,
                       404: NOT_FOUND})
async def patch_breakpoint(request: Request) -> Response:
    patch = _body_breakpoint(await read_json(request))
    return await _replace(request, lambda old: merge_patch(old, patch))


@routes.route("DELETE", "/api/breakpoints/{id}", "Delete a breakpoint (flows paused at it "
              "stay paused until resumed).", params=(ID,),
              replies={200: Reply("Deleted.", obj({"deleted": {"type": "string"}})),
                       404: NOT_FOUND})
async def delete_breakpoint(request: Request) -> Response:
    ident = request.path_params["id"]

    def delete(tables: list[dict[str, Any]]) -> None:
        for n, table in enumerate(tables):
            if table.get("id") == ident:
                del tables[n]
                return
        raise ApiError(404, f"no breakpoint {ident!r}")

    await _change(request, delete)
    return JSONResponse({"deleted": ident})
