"""What plugins see of a WebSocket connection: its messages, and the connection as a whole.

Plain data, like :mod:`nectoproxy.flow`: the engine (``nectoproxy.proxy.websocket``) parses
the frames, hands a :class:`WebSocketMessage` to ``on_websocket_message`` and sends whatever
the hooks left behind. ``flow.websocket`` is a :class:`WebSocketData` once a flow switched to
the WebSocket protocol.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class WebSocketMessage:
    """One message (all its fragments together), as ``on_websocket_message`` sees it.

    ``content`` (bytes) and ``text`` (str, for a text message) may be changed, or the
    message dropped with :meth:`drop`. A message larger than ``proxy.body_buffer_limit`` is
    not held whole: ``streamed`` is True, ``content`` is its start, and it is relayed as it
    came (only :meth:`drop` still applies).
    """

    #: True for a message the client sent (to the origin), False for one the origin sent.
    from_client: bool
    content: bytes
    is_text: bool = False
    timestamp: float = field(default_factory=time.time)
    #: Sent by a plugin or the API (:meth:`WebSocketData.inject`), not by a peer.
    injected: bool = False
    streamed: bool = False
    dropped: bool = False

    @property
    def direction(self) -> str:
        """"client" (sent by the client) or "server" (sent by the origin)."""
        return "client" if self.from_client else "server"

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    @text.setter
    def text(self, value: str) -> None:
        self.content = value.encode("utf-8")

    def drop(self) -> None:
        """Do not relay this message."""
        self.dropped = True


#: ``tap(message, piece, last)``: called with each piece of a message as it is sent (after
#: plugins), ``last`` with its final one; ``message.content`` is not filled in while a
#: message streams. It observes and must not block; it may return an awaitable to hold the
#: relay of that direction until it completes.
MessageTap = Callable[[WebSocketMessage, bytes, bool], Awaitable[None] | None]


class WebSocketData:
    """A WebSocket connection's state, as ``flow.websocket``."""

    def __init__(self, *, subprotocol: str | None = None, extensions: str | None = None
                 ) -> None:
        #: The negotiated subprotocol and extensions (the origin's answer), if any.
        self.subprotocol = subprotocol
        self.extensions = extensions
        #: Whether the messages are parsed (False: relayed as opaque bytes, no message hook
        #: was implemented and nothing tapped them).
        self.parsed = False
        #: The close code and reason of the first close frame, and who sent it; None when the
        #: connection ended without one (or was not parsed).
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by_client: bool | None = None
        self.timestamp_start = time.time()
        self.timestamp_end: float | None = None
        #: Messages relayed each way (injected ones included).
        self.messages_from_client = 0
        self.messages_from_server = 0
        #: Observers of every message sent (capture's): add one in ``on_websocket_start`` and
        #: the messages are parsed even when no plugin implements ``on_websocket_message``.
        self.message_taps: list[MessageTap] = []
        #: Set by the engine while the connection is open: queues a message to send.
        self._send: Callable[[WebSocketMessage], None] | None = None

    @property
    def open(self) -> bool:
        """Whether messages can be injected now."""
        return self._send is not None

    def inject(self, content: str | bytes, *, to_client: bool) -> WebSocketMessage:
        """Send a new message: to the client (``to_client=True``) or to the origin; a str is
        a text message, bytes a binary one. It goes after any message being relayed that
        way, is given to the message taps (``injected`` True) but not to
        ``on_websocket_message``. Possible from ``on_websocket_start`` (a message injected
        there makes the connection parsed) until the connection closes; RuntimeError
        otherwise, or when it is relayed as opaque bytes.
        """
        if self._send is None:
            raise RuntimeError("the WebSocket connection is not open for messages")
        is_text = isinstance(content, str)
        message = WebSocketMessage(
            from_client=not to_client, is_text=is_text, injected=True,
            content=content.encode("utf-8") if isinstance(content, str) else bytes(content))
        self._send(message)
        return message

    async def tap(self, message: WebSocketMessage, piece: bytes, last: bool) -> None:
        """Hand a piece of a message to every tap (the engine calls this)."""
        for tap in self.message_taps:
            result = tap(message, piece, last)
            if result is not None:
                await result
