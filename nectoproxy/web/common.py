"""What every route module shares: the app's context, errors as JSON, parameters, and the
route table that both Starlette and the OpenAPI document are built from.

A route is declared once, with its parameters and response shapes, through :class:`Routes`;
``create_app`` turns the table into Starlette routes and ``/api/openapi.json`` into the schema,
so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import anyio.to_thread
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from nectoproxy.store import FlowStore

if TYPE_CHECKING:
    from nectoproxy.settings import SettingsRegistry
    from nectoproxy.web.replay import Replayer
    from nectoproxy.websocket import WebSocketData

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

#: Largest JSON request body of an ordinary call (replay and HAR import set their own).
MAX_JSON_BODY = 1024 * 1024


class ApiError(Exception):
    """Ends a request with ``{"error": message, **extra}`` and the status given."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class CaptureControl(Protocol):
    """Pauses and resumes capture (:class:`nectoproxy.capturepause.CapturePause`)."""

    @property
    def paused(self) -> bool: ...

    def set_paused(self, paused: bool) -> None:
        """Called in a worker thread."""


@dataclass
class WebContext:
    """What the routes need, kept on ``app.state.web``."""

    store: FlowStore
    token: str
    replayer: Replayer | None = None
    status: Callable[[], Mapping[str, Any]] | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    #: The plugins' live settings (``/api/settings``, ``/api/rules``); None: there are none.
    settings: SettingsRegistry | None = None
    #: Capture's pause switch (``/api/capture``); None: nothing captures here.
    capture: CaptureControl | None = None
    #: The WebSocket connection open now in this process for a flow id, if any (capture's).
    websockets: Callable[[str], WebSocketData | None] | None = None
    #: Event sockets open now.
    event_clients: int = 0
    #: Store calls in worker threads, so a burst of API calls cannot take every thread that
    #: the proxy (key generation, file I/O) also needs.
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(16))
    #: Streamed answers (bodies, HAR exports): each holds a thread while its client reads.
    stream_limiter: anyio.CapacityLimiter = field(
        default_factory=lambda: anyio.CapacityLimiter(8))

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread (store calls never run on the loop)."""
        call = functools.partial(fn, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, limiter=self.limiter)


def context(conn: HTTPConnection) -> WebContext:
    web = conn.app.state.web
    assert isinstance(web, WebContext)
    return web


# -- parameters -------------------------------------------------------------------------------


def query_int(request: HTTPConnection, name: str, default: int | None = None, *,
              minimum: int = 0, maximum: int | None = None) -> int | None:
    """An integer query parameter; ``maximum`` clamps, anything not an integer is a 400."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ApiError(400, f"{name} must be at least {minimum}")
    return value if maximum is None else min(value, maximum)


def query_flag(request: HTTPConnection, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes", "on")


def path_int(request: Request, name: str) -> int:
    raw = request.path_params[name]
    try:
        return int(raw)
    except ValueError:
        raise ApiError(404, f"no {name} {raw!r}: ids are integers") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (before reading, if it says)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, *, limit: int = MAX_JSON_BODY,
                    optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; an empty body is ``{}`` when ``optional``."""
    data = await read_body(request, limit)
    if not data.strip():
        if optional:
            return {}
        raise ApiError(400, "a JSON object is required as the request body")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return value


# -- the route table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A path or query parameter, for the OpenAPI document."""

    name: str
    schema: Mapping[str, Any]
    description: str = ""
    location: str = "query"
    required: bool = False


@dataclass(frozen=True)
class Reply:
    """One possible answer: a JSON schema, or another media type (``content``)."""

    description: str
    schema: Mapping[str, Any] | None = None
    content: str = "application/json"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler | None
    summary: str
    params: Sequence[Param] = ()
    body: Mapping[str, Any] | None = None
    #: Media types the request body may have (the first is documented with ``body``).
    body_content: Sequence[str] = ("application/json",)
    body_required: bool = False
    replies: Mapping[int, Reply] = field(default_factory=dict)
    websocket: bool = False
    token: bool = True
    tag: str = ""


class Routes:
    """A module's routes, in matching order (a literal path before a ``{param}`` sibling)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def route(self, method: str, path: str, summary: str, *, params: Sequence[Param] = (),
              body: Mapping[str, Any] | None = None, body_required: bool = False,
              body_content: Sequence[str] = ("application/json",),
              replies: Mapping[int, Reply] | None = None,
              token: bool = True) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(Endpoint(
                method=method, path=path, handler=handler, summary=summary, params=params,
                body=body, body_content=body_content, body_required=body_required,
                replies=replies or {}, token=token, tag=self.tag))
            return handler

        return register

    def document(self, endpoint: Endpoint) -> None:
        """An endpoint served by other means (the event socket), listed for the schema."""
        self.endpoints.append(dataclasses.replace(endpoint, tag=self.tag))


def path_param(name: str, description: str, schema: Mapping[str, Any] | None = None) -> Param:
    return Param(name, schema or {"type": "string"}, description, "path", True)
