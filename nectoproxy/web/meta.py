"""The API about itself: health, status, the OpenAPI document, and the page at
``/api/endpoints``.

``/api/endpoints`` is a plain page that says what this server is and lists the API's
endpoints (from the same route table as the OpenAPI document); ``/`` is the web UI
(:mod:`nectoproxy.web.ui`).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from nectoproxy import __version__
from nectoproxy.store import FlowStore
from nectoproxy.web import openapi
from nectoproxy.web.common import Reply, Routes, context
from nectoproxy.web.schemas import obj, ref

routes = Routes("meta")


@routes.route("GET", "/api/health", "Whether the inspector answers (no token needed).",
              token=False, replies={200: Reply("Up.", obj({"status": {"const": "ok"}}))})
async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _store_info(store: FlowStore) -> dict[str, Any]:
    sessions = store.list_sessions()
    info: dict[str, Any] = {
        "sessions": len(sessions), "flows": sum(s.flow_count for s in sessions),
        "storedBytes": sum(s.stored_bytes for s in sessions),
        "activeSession": store.active_session().to_json(), "marker": store.current_marker(),
    }
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        info["path"] = str(path)
        try:
            info["fileBytes"] = sum(p.stat().st_size for p in
                                    (path, path.with_name(path.name + "-wal")) if p.exists())
        except OSError:
            pass
    return info


@routes.route("GET", "/api/status", "The proxy's and the store's state.",
              replies={200: Reply("The state.", ref("Status"))})
async def status(request: Request) -> Response:
    ctx = context(request)
    data: dict[str, Any] = {"version": __version__}
    if ctx.status is not None:
        data.update(ctx.status())
    data["store"] = await ctx.run(_store_info, ctx.store)
    data["eventClients"] = ctx.event_clients
    return JSONResponse(data)


@routes.route("GET", "/api/openapi.json", "This API's OpenAPI 3.1 document.",
              replies={200: Reply("The document.", {"type": "object"})})
async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi.build(context(request).endpoints, __version__))


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>NectoProxy inspector</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; }}
code {{ font: 13px ui-monospace, monospace; }}
table {{ border-collapse: collapse; }} td {{ padding: .15rem .8rem .15rem 0; }}
@media (prefers-color-scheme: dark) {{ body {{ background: #161616; color: #ddd; }}
  a {{ color: #8cf; }} }}
</style>
</head>
<body>
<h1>NectoProxy inspector</h1>
<p>NectoProxy {version} is capturing traffic into its flow store; this server is its REST API
and event socket. The web UI is at <a href="/">/</a>; scripts use the API below
(<code>curl -H "Authorization: Bearer $TOKEN"</code>; this browser holds the token cookie).</p>
<p>The whole API, with parameters and response shapes:
<a href="/api/openapi.json">/api/openapi.json</a> (OpenAPI 3.1). Its guide is
<code>docs/api.md</code>; the filter language is in <code>docs/store.md</code>. Live changes:
<code>ws://&lt;this host&gt;/api/events</code>.</p>
<p>Start here: <a href="/api/sessions">sessions</a>,
<a href="/api/traffic">the newest flows of the active session</a>,
<a href="/api/status">status</a>.</p>
<h2>Endpoints</h2>
<table>
{rows}
</table>
</body>
</html>
"""


@routes.route("GET", "/api/endpoints", "A page: what the server is, and its endpoints.",
              replies={200: Reply("A page.", {"type": "string"}, "text/html")})
async def home(request: Request) -> Response:
    rows = "\n".join(
        f"<tr><td><code>{e.method}</code></td><td><code>{html.escape(e.path)}</code></td>"
        f"<td>{html.escape(e.summary)}</td></tr>"
        for e in context(request).endpoints if e.path not in ("/", "/api/endpoints"))
    page = _PAGE.format(version=html.escape(__version__), rows=rows)
    return HTMLResponse(page, headers={
        "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                   "frame-ancestors 'none'"})
