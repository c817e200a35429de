"""The web UI: the bundle built from ``web-ui/`` into ``nectoproxy/web/static/``.

``/`` is the UI's page (after the Guard's token check; opening it with ``?token=`` sets the
cookie); ``/assets/<name>`` its scripts and styles, whose names carry a content hash, so they
are cached for a year. Only the files the build wrote are served: the names are read from the
directory once, and a request names one of them or gets a 404 (no path is ever joined from
the request). Without a bundle (a checkout that never built it), ``/`` is the API's plain page.
"""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from nectoproxy.web import meta
from nectoproxy.web.common import ApiError, Reply, Routes, path_param
from nectoproxy.web.schemas import ref

routes = Routes("ui")

STATIC = Path(__file__).with_name("static")
#: The page runs only the bundle's own scripts, talks only to this origin (the API and the
#: event socket), and shows captured images from the body endpoints.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; "
            "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
ASSET_CACHE = "public, max-age=31536000, immutable"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".svg": "image/svg+xml", ".png": "image/png", ".woff2": "font/woff2",
               ".json": "application/json"}


@functools.cache
def _assets(folder: Path) -> dict[str, tuple[bytes, str]]:
    """The bundle's assets by file name: (content, media type)."""
    found: dict[str, tuple[bytes, str]] = {}
    directory = folder / "assets"
    if directory.is_dir():
        for path in directory.iterdir():
            media = MEDIA_TYPES.get(path.suffix)
            if media and path.is_file() and not path.name.startswith("."):
                found[path.name] = (path.read_bytes(), media)
    return found


@functools.cache
def _index(folder: Path) -> bytes | None:
    path = folder / "index.html"
    return path.read_bytes() if path.is_file() else None


@routes.route("GET", "/", "The web UI (opening it with ?token= sets the token cookie).",
              replies={200: Reply("The UI's page.", {"type": "string"}, "text/html")})
async def index(request: Request) -> Response:
    page = _index(STATIC)
    if page is None:
        return await meta.home(request)
    return Response(page, media_type="text/html; charset=utf-8",
                    headers={"content-security-policy": PAGE_CSP})


@routes.route("GET", "/assets/{name}", "A file of the web UI's bundle (cached: names are "
              "content-hashed).", params=(path_param("name", "The file name."),),
              replies={200: Reply("The file.", {"type": "string"}, "text/javascript"),
                       404: Reply("Not a file of the bundle.", ref("Error"))})
async def asset(request: Request) -> Response:
    found = _assets(STATIC).get(request.path_params["name"])
    if found is None:
        raise ApiError(404, "no such file in the web UI's bundle")
    content, media = found
    return Response(content, media_type=media, headers={"cache-control": ASSET_CACHE})
