"""``/api/sessions``: named capture sessions, one of them active."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nectoproxy.store import Session, SessionNotFound, StoreError
from nectoproxy.web.common import (
    ApiError,
    Reply,
    Routes,
    WebContext,
    context,
    path_int,
    path_param,
    read_json,
)
from nectoproxy.web.schemas import obj, ref

routes = Routes("sessions")

ID_PARAM = path_param("id", "A session id.", {"type": "integer"})
NOT_FOUND = Reply("No such session.", ref("Error"))
ONE = Reply("The session.", ref("Session"))
NAME_BODY = obj({"name": {"type": "string", "minLength": 1, "maxLength": 200},
                 "activate": {"type": "boolean", "default": False}},
                required=("name",), additionalProperties=False)


def _name(data: dict[str, Any]) -> str:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "name (a non-empty string) is required")
    return name


async def _call(ctx: WebContext, fn: Any, *args: Any) -> Session:
    try:
        result = await ctx.run(fn, *args)
    except SessionNotFound as exc:
        raise ApiError(404, str(exc)) from None
    except StoreError as exc:
        raise ApiError(400, str(exc)) from None
    assert isinstance(result, Session)
    return result


@routes.route("GET", "/api/sessions", "Every session, newest first.",
              replies={200: Reply("The sessions.", ref("SessionList"))})
async def list_sessions(request: Request) -> Response:
    ctx = context(request)
    sessions = await ctx.run(ctx.store.list_sessions)
    return JSONResponse({"sessions": [s.to_json() for s in sessions]})


@routes.route("POST", "/api/sessions", "Create a session (and activate it if asked).",
              body=NAME_BODY, body_required=True,
              replies={201: Reply("The new session.", ref("Session")),
                       400: Reply("No name.", ref("Error"))})
async def create_session(request: Request) -> Response:
    ctx = context(request)
    data = await read_json(request)
    session = await _call(ctx, ctx.store.create_session, _name(data))
    if data.get("activate") is True:
        session = await _call(ctx, ctx.store.activate_session, session.id)
    return JSONResponse(session.to_json(), status_code=201)


@routes.route("GET", "/api/sessions/active", "The session new flows go to.", replies={200: ONE})
async def active_session(request: Request) -> Response:
    ctx = context(request)
    return JSONResponse((await _call(ctx, ctx.store.active_session)).to_json())


@routes.route("GET", "/api/sessions/{id}", "One session.", params=(ID_PARAM,),
              replies={200: ONE, 404: NOT_FOUND})
async def get_session(request: Request) -> Response:
    ctx = context(request)
    session_id = path_int(request, "id")
    session = await ctx.run(ctx.store.get_session, session_id)
    if session is None:
        raise ApiError(404, f"no session {session_id}")
    return JSONResponse(session.to_json())


@routes.route("PATCH", "/api/sessions/{id}", "Rename a session.", params=(ID_PARAM,),
              body=obj({"name": {"type": "string", "minLength": 1, "maxLength": 200}}),
              body_required=True,
              replies={200: ONE, 400: Reply("No name.", ref("Error")), 404: NOT_FOUND})
async def rename_session(request: Request) -> Response:
    ctx = context(request)
    session_id = path_int(request, "id")
    name = _name(await read_json(request))
    if await ctx.run(ctx.store.get_session, session_id) is None:
        raise ApiError(404, f"no session {session_id}")
    return JSONResponse((await _call(ctx, ctx.store.rename_session, session_id, name)).to_json())


@routes.route("DELETE", "/api/sessions/{id}", "Delete a session with its flows (deleting the "
              "active one activates the newest other, or a new one).", params=(ID_PARAM,),
              replies={200: Reply("Deleted.", ref("Deleted")), 404: NOT_FOUND})
async def delete_session(request: Request) -> Response:
    ctx = context(request)
    session_id = path_int(request, "id")
    if not await ctx.run(ctx.store.delete_session, session_id):
        raise ApiError(404, f"no session {session_id}")
    return JSONResponse({"deleted": True})


@routes.route("POST", "/api/sessions/{id}/activate", "Make new flows go to this session.",
              params=(ID_PARAM,), replies={200: ONE, 404: NOT_FOUND})
async def activate_session(request: Request) -> Response:
    ctx = context(request)
    session = await _call(ctx, ctx.store.activate_session, path_int(request, "id"))
    return JSONResponse(session.to_json())
