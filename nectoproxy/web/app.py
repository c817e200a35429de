"""``create_app``: the inspector's ASGI application over a flow store.

The routes come from each module's route table (traffic, replay, export, sessions, HAR, the
API about itself), in matching order; the event socket is the one WebSocket route. In front of
everything sits :class:`~nectoproxy.web.security.Guard` (token, Host, Origin). Errors are JSON:
``{"error": message}``, with ``position`` for a filter syntax error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from nectoproxy.settings import SettingsRegistry
from nectoproxy.store import FilterError, FlowStore, SessionNotFound, StoreError
from nectoproxy.web import (
    breakpointsapi,
    captureapi,
    events,
    export,
    filterapi,
    harapi,
    meta,
    replayapi,
    rulesapi,
    sessions,
    settingsapi,
    traffic,
    ui,
    websocketapi,
)
from nectoproxy.web.common import (
    ApiError,
    CaptureControl,
    Endpoint,
    Param,
    Reply,
    WebContext,
    error_response,
)
from nectoproxy.web.replay import Replayer
from nectoproxy.web.schemas import ref
from nectoproxy.web.security import Guard, HostRules
from nectoproxy.websocket import WebSocketData

log = logging.getLogger("nectoproxy.web")

#: Matching order matters where a literal segment and a ``{param}`` share a place.
ROUTE_TABLES = (traffic.routes, replayapi.routes, export.routes, sessions.routes,
                harapi.routes, settingsapi.routes, rulesapi.routes, breakpointsapi.routes,
                captureapi.routes, filterapi.routes, websocketapi.routes,
                meta.routes, ui.routes)

EVENTS = Endpoint(
    method="GET", path="/api/events", handler=None, websocket=True,
    summary="The event socket (WebSocket): flows added, updated and deleted (batched, at most "
    "~10 messages a second), session changes, resets, WebSocket flows' openings, messages and "
    "closes.",
    params=(Param("sessionId", {"type": "integer"}, "Only this session's flows."),
            Param("token", {"type": "string"}, "The token (browsers cannot set headers on a "
                  "WebSocket).")),
    replies={101: Reply("Switching to the WebSocket protocol; messages are Event objects.",
                        ref("Event")),
             403: Reply("A foreign Host or Origin.", ref("Error"))})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, **exc.extra)


async def _filter_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FilterError)
    return error_response(400, exc.message, position=exc.position)


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, str(exc))


async def _store_error(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: the flow store failed: %s", request.method, request.url.path, exc)
    return error_response(503, f"the flow store failed: {exc}")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


def create_app(store: FlowStore, *, token: str, allowed_hosts: Sequence[str] = (),
               replayer: Replayer | None = None,
               status: Callable[[], Mapping[str, Any]] | None = None,
               settings: SettingsRegistry | None = None,
               capture: CaptureControl | None = None,
               websockets: Callable[[str], WebSocketData | None] | None = None) -> Starlette:
    """The inspector's API over ``store``: every route needs ``token`` except
    ``/api/health``; ``allowed_hosts`` are Host names to answer besides this machine's;
    ``replayer`` sends replays (without one they answer 503); ``status()`` adds the proxy's
    fields to ``/api/status``; ``settings`` are the plugins' live settings (filled in once the
    proxy runs); ``capture`` pauses and resumes capture (``/api/capture``);
    ``websockets(flow_id)`` is the WebSocket connection open now for a flow (to send into).
    ValueError for an empty token or a malformed host."""
    if not token:
        raise ValueError("the inspector needs a token")
    HostRules(allowed_hosts)  # a malformed entry is an error now, not at the first request
    endpoints = [e for table in ROUTE_TABLES for e in table.endpoints]
    endpoints.insert(0, EVENTS)
    routes: list[BaseRoute] = [WebSocketRoute("/api/events", events.events)]
    routes += [Route(e.path, e.handler, methods=[e.method]) for e in endpoints if e.handler]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=token, allowed_hosts=allowed_hosts)],
        exception_handlers={ApiError: _api_error, FilterError: _filter_error,
                            SessionNotFound: _not_found, StoreError: _store_error,
                            HTTPException: _http_error},
    )
    app.state.web = WebContext(store=store, token=token, replayer=replayer, status=status,
                               endpoints=endpoints, settings=settings, capture=capture,
                               websockets=websockets)
    return app
