"""The hook contract between NectoProxy and its plugins.

Each function below is a hook. A plugin implements one by defining a function (or method) of
the same name, taking any subset of the parameters listed here, by keyword. Implementations
may be plain functions or ``async def``; NectoProxy awaits them one after the other, in pluggy's
order (``tryfirst``/``trylast`` honoured), so what one plugin changes the next one sees.

Inside script files, a function named like a hook is a hook implementation without any
decorator; in packages, mark them with ``@nectoproxy.hookimpl`` (needed for ``tryfirst`` and
friends). A name starting with ``on_`` that is not listed here is an error at start-up.

The hook reference in docs/hooks.md is checked against these docstrings by the test suite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from cryptography import x509

    from nectoproxy.config import Config
    from nectoproxy.flow import Connection, Flow, Tunnel
    from nectoproxy.settings import SettingsProvider
    from nectoproxy.websocket import WebSocketMessage

PROJECT = "nectoproxy"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def on_configure(config: Config, options: Mapping[str, Any]) -> None:
    """Called once at start-up, before the proxy listens, for every plugin.

    :param config: the effective configuration (file + environment + command line).
    :param options: this plugin's own ``[plugins.<name>]`` table from nectoproxy.toml (an empty
        mapping when there is none). Each implementation receives its own plugin's table.

    Raise :class:`nectoproxy.ConfigError` (or ``ValueError``) naming the offending key to stop
    start-up with that message. Return ``False`` to switch the plugin off for this run (say,
    nothing is configured): its other hooks are then never called and cost nothing. Return a
    set of hook names to keep only those for this run (an ``on_request`` or ``on_response``
    that is not needed makes bodies buffer for nothing). Any other return value is ignored.
    """


@hookspec
def on_start(config: Config, address: tuple[str, int]) -> None:
    """The proxy is listening and about to accept its first client.

    :param config: the effective configuration.
    :param address: the (host, port) actually listened on (useful with port 0).

    The return value is ignored.
    """


@hookspec
def on_stop() -> None:
    """The proxy stopped accepting clients and is shutting down; flush and close files here.

    The return value is ignored.
    """


@hookspec
def on_connect(connection: Connection) -> None:
    """A client connected, and again for each ``CONNECT`` it sends (a SOCKS5 CONNECT too).

    :param connection: the client connection; ``connection.mode`` is how it came in
        ("regular", "reverse", "socks5"). On the first call ``connection.target`` is None
        (in reverse mode: the origin's (host, port)); for a ``CONNECT`` it is the requested
        (host, port).

    Call ``connection.refuse(status, reason)`` to answer the client with that status and close
    the connection (a SOCKS client gets "not allowed by ruleset" instead, or, refused when it
    connects, just the close). For a ``CONNECT``, set ``connection.intercept = False`` to
    relay the TLS bytes untouched (pass-through: the client sees the origin's own
    certificate). The return value is ignored.
    """


@hookspec
def on_request_headers(flow: Flow) -> None:
    """The request line and headers are in; the body has not been read yet.

    :param flow: the flow; ``flow.request`` has its method, URL and headers, and
        ``flow.request.raw_content`` is None.

    Set ``flow.response`` to answer right away (``on_request`` is then skipped, the origin is
    never contacted, ``on_response`` still fires), or call ``flow.kill()``. Implementing only
    this hook does not make bodies buffer, so it is the cheap place for routing decisions.
    The return value is ignored.
    """


@hookspec
def on_request(flow: Flow) -> None:
    """The client's request is complete (its body buffered, up to ``body_buffer_limit``).

    :param flow: the flow; ``flow.request`` may be changed in any way: method, URL (where the
        request goes), headers, ``content``/``text``.

    Set ``flow.response`` (e.g. ``Response.make(200, "hi")``) to answer without contacting the
    origin; ``on_response`` still fires. Call ``flow.kill()`` to drop the connection. When the
    body is larger than the limit it streams through untouched: the hook fires when the headers
    are in and ``flow.request.streamed`` is True. The return value is ignored.
    """


@hookspec
def on_response_headers(flow: Flow) -> None:
    """The response status line and headers are in; its body has not been read yet.

    :param flow: the flow; ``flow.response`` has its status and headers (for a response a
        plugin made, its body too).

    Headers may be changed, ``flow.response.chunk_filters`` set (to pace or transform the
    body as it streams), or ``flow.kill()`` called. Implementing only this hook does not make
    bodies buffer. The return value is ignored.
    """


@hookspec
def on_response(flow: Flow) -> None:
    """The response is complete (from the origin or from a plugin), before it is sent.

    :param flow: the flow; ``flow.response`` may be changed: status, headers,
        ``content``/``text``. Large bodies stream untouched, as for ``on_request``
        (``flow.response.streamed`` is True and only the headers can be changed).

    ``flow.kill()`` drops the connection instead of answering (on HTTP/2, resets only that
    stream: the connection's other requests go on). The return value is ignored.
    """


@hookspec
def on_complete(flow: Flow) -> None:
    """The response has been sent to the client in full (bodies streamed or not).

    :param flow: the finished flow, with ``request_body_size``, ``response_body_size`` and
        its timestamps filled in. Implementing this hook does not make bodies buffer, so it is
        the cheap place to log or count flows. The return value is ignored.
    """


@hookspec
def on_error(flow: Flow, error: str) -> None:
    """A flow failed: the upstream could not be reached or answered badly, a timeout, the
    client went away, or a plugin killed it.

    :param flow: the failed flow (``flow.error`` is set; ``flow.response`` is the error answer
        sent to the client, if one could be sent).
    :param error: a one-line description of what went wrong.

    The return value is ignored.
    """


@hookspec
def on_websocket_start(flow: Flow) -> None:
    """A flow switched to the WebSocket protocol: the origin's ``101`` was sent to the client.

    :param flow: the flow; ``flow.websocket`` (a :class:`nectoproxy.websocket.WebSocketData`)
        has the negotiated ``subprotocol`` and ``extensions``.

    Add a function to ``flow.websocket.message_taps`` to observe every message as it is sent
    (see ``MessageTap``), or call ``flow.websocket.inject(...)`` to send a first message.
    When no plugin implements ``on_websocket_message`` and nothing tapped or injected here,
    the connection is relayed as opaque bytes (as fast as any upgraded connection).
    The return value is ignored.
    """


@hookspec
def on_websocket_message(flow: Flow, message: WebSocketMessage) -> None:
    """A WebSocket message arrived whole (all its fragments, decompressed), before it is sent
    on.

    :param flow: the flow (``flow.websocket`` is open: ``inject(content, to_client=...)``
        sends new messages either way, after this one).
    :param message: a :class:`nectoproxy.websocket.WebSocketMessage`: ``from_client``
        (``direction`` "client" or "server"), ``is_text``, ``content`` (bytes) and ``text``.

    Change ``content`` or ``text`` to send something else, or call ``message.drop()`` not to
    send it. A message larger than ``proxy.body_buffer_limit`` is not held whole:
    ``message.streamed`` is True, ``content`` is its start, and the rest streams through
    untouched (dropping still works). Ping, pong and close frames are passed on without this
    hook; injected messages do not reach it. Implementing it makes every WebSocket connection
    parsed. The return value is ignored.
    """


@hookspec
def on_websocket_end(flow: Flow) -> None:
    """A WebSocket connection ended (both sides closed, or the flow was cut short), before
    ``on_complete``.

    :param flow: the flow; ``flow.websocket`` has ``close_code`` and ``close_reason`` of the
        first close frame and ``closed_by_client`` (all None when the connection ended
        without a close frame, or was relayed opaque), ``messages_from_client`` and
        ``messages_from_server``.

    The return value is ignored.
    """


@hookspec
def on_cert_generated(hostname: str, certificate: x509.Certificate) -> None:
    """A new leaf certificate was minted for ``hostname`` (not called on cache hits).

    :param hostname: the name (or IP literal) the certificate is for.
    :param certificate: the new certificate (a ``cryptography.x509.Certificate``), signed by the
        NectoProxy CA.

    The return value is ignored.
    """


@hookspec
def on_tunnel(tunnel: Tunnel) -> None:
    """A connection relayed untouched (pass-through TLS, or bytes neither TLS nor HTTP) ended.

    :param tunnel: the host and port the client asked for, ``reason`` ("passthrough" or
        "opaque"), the SNI if the client sent one, ``server_address``, ``bytes_up`` (client to
        origin) and ``bytes_down``, ``timestamp_start``/``timestamp_end``, and ``error`` when
        the origin could not be reached.

    The return value is ignored.
    """


@hookspec
def on_settings(config: Config) -> list[SettingsProvider] | None:
    """Asked once, after ``on_start``, in the process that serves the inspector: the settings
    this plugin lets the inspector's API read and change while the proxy runs.

    :param config: the effective configuration (``config.home_dir`` is where NectoProxy keeps
        its own files, a good place for a settings file).

    Return a list of :class:`nectoproxy.settings.SettingsProvider` (each with a ``name``, a
    JSON ``schema``, ``get()`` and ``put(value)``); an empty list or None offers nothing. The
    hook must be a plain function (not ``async def``): it only hands over objects. A
    plugin switched off by ``on_configure`` is not asked, so its settings do not appear.
    ``put`` is called in a worker thread: it validates (raising
    :class:`nectoproxy.settings.SettingsError` naming the field), writes a file atomically and
    applies the value; with ``workers = N`` the other processes' instances see the change by
    watching that file (:class:`nectoproxy.settings.FileWatch`; for a TOML file,
    :class:`nectoproxy.settings.LiveFile` reads, watches, reloads and writes it).
    """
