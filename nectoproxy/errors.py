"""NectoProxy's exception hierarchy.

Every error the proxy raises on purpose is a :class:`NectoProxyError`. The ones that end a flow
carry the HTTP status the client is answered with, so the engine maps errors to responses in one
place instead of guessing from anyio or ssl exceptions.
"""

from __future__ import annotations


class NectoProxyError(Exception):
    """Base class of every error NectoProxy raises on purpose."""

    #: The status a client is answered with when this error ends its flow.
    status: int = 500


class ConfigError(NectoProxyError):
    """A configuration file, environment variable or option is invalid."""


class PortInUse(ConfigError):
    """A port the proxy or the inspector should listen on is taken (the command exits 1)."""


class PluginError(NectoProxyError):
    """A plugin could not be loaded, or failed in a way that ends a flow."""


class CertError(NectoProxyError):
    """The certificate authority or a leaf certificate could not be created or loaded."""


class ProtocolError(NectoProxyError):
    """A client sent something that is not valid HTTP."""

    status = 400

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ClientDisconnected(NectoProxyError):
    """The client went away before its flow completed."""

    status = 499


class UpstreamError(NectoProxyError):
    """The origin (or upstream proxy) could not be reached or answered badly."""

    status = 502

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class UpstreamTimeout(UpstreamError):
    """The origin did not connect, handshake or answer in time."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=504)


class FlowKilled(NectoProxyError):
    """A plugin killed the flow; the client connection is closed without an answer."""


__all__ = [
    "CertError",
    "ClientDisconnected",
    "ConfigError",
    "FlowKilled",
    "NectoProxyError",
    "PluginError",
    "PortInUse",
    "ProtocolError",
    "UpstreamError",
    "UpstreamTimeout",
]
