"""The inspector's web side: the REST API and event socket over the flow store (docs/api.md).

``create_app(store, token=...)`` builds the ASGI application, ``serve_web(app, host, port)``
serves it with hypercorn in the current event loop, and :class:`Replayer` sends replays
through the running proxy.
"""

from __future__ import annotations

from nectoproxy.web.app import create_app
from nectoproxy.web.replay import Replayer, ReplayResult
from nectoproxy.web.server import serve_web

__all__ = ["ReplayResult", "Replayer", "create_app", "serve_web"]
