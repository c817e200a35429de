"""NectoProxy: a plugin-driven, scriptable man-in-the-middle HTTP(S) proxy framework.

Everything a plugin author needs is importable from here::

    from nectoproxy import hookimpl, Flow, Response

    @hookimpl
    async def on_request(flow: Flow) -> None:
        if flow.request.host == "blocked.example":
            flow.response = Response.make(403, "blocked")
"""

from __future__ import annotations

from nectoproxy.config import Config, load_config
from nectoproxy.errors import (
    CertError,
    ConfigError,
    NectoProxyError,
    PluginError,
    ProtocolError,
    UpstreamError,
    UpstreamTimeout,
)
from nectoproxy.flow import Connection, Flow, Headers, Request, Response, TLSInfo
from nectoproxy.hookspecs import hookimpl
from nectoproxy.hosts import host_matches
from nectoproxy.proxy.server import Proxy

__version__ = "0.1.0"

__all__ = [
    "CertError",
    "Config",
    "ConfigError",
    "Connection",
    "Flow",
    "Headers",
    "NectoProxyError",
    "PluginError",
    "ProtocolError",
    "Proxy",
    "Request",
    "Response",
    "TLSInfo",
    "UpstreamError",
    "UpstreamTimeout",
    "__version__",
    "hookimpl",
    "host_matches",
    "load_config",
]
