"""``WS /api/events``: what changed in the store, batched, for the UI's live list.

Each connection follows the store's changes feed (``changes_since``) from the moment it
connects, polling it off the loop every :data:`INTERVAL` seconds and sending at most one
message per poll, so a client gets at most ~10 messages a second however fast traffic comes:

- ``{"type": "sessions", "sessions": [...]}`` first, and whenever a session is created,
  renamed, deleted or activated;
- ``{"type": "flows", "flows": [...summaries], "deleted": [...ids]}``: flows added or updated
  (each once, as it is now) and ids deleted since the last message;
- ``{"type": "settings", "name": ...}``: live settings changed through the API (re-read them);
- ``{"type": "breakpoint:hit", "flow": {...}}`` and ``{"type": "breakpoint:resumed", "id": ...,
  "action": ...}``: a flow paused at a breakpoint, and went on (see ``/api/breakpoints``);
- ``{"type": "websocket:open", "trafficId": ..., "subprotocol": ..., "extensions": ...}``,
  ``{"type": "websocket:frame", "trafficId": ..., "frames": [...]}`` (messages of one flow
  relayed since the last message, without content) and ``{"type": "websocket:close",
  "trafficId": ..., "code": ..., "reason": ..., "closedBy": ...}``: a captured WebSocket
  connection (these and ``flows`` messages take turns, so neither starves the other);
- ``{"type": "reset"}``: the client is too far behind (the store forgot the deletions it
  missed, or more than :data:`MAX_BATCH` changes piled up): reload the list.

The backlog waits in the store, not here: a connection holds one message at a time. A client
that does not read a message within :data:`SEND_TIMEOUT` is dropped with close code 1008.
``?sessionId=`` (or a ``{"type": "subscribe", "sessionId": n}`` message; null for all) limits
``flows`` to one session; deleted ids are always sent (the client ignores ids it lacks).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from nectoproxy.breakpoints import PausedFlows
from nectoproxy.settings import SettingsRegistry
from nectoproxy.store import FlowStore, FlowSummary
from nectoproxy.web.breakpointsapi import paused_flows
from nectoproxy.web.common import ApiError, WebContext, context, query_int

log = logging.getLogger("nectoproxy.web")

INTERVAL = 0.1
#: Changes read per store query, and the most one message carries before a reset instead.
PAGE = 1000
MAX_BATCH = 5000
#: A client that has not taken a message after this long is dropped.
SEND_TIMEOUT = 10.0
CLOSE_TOO_SLOW = 1008
CLOSE_GOING_AWAY = 1001
#: Set by ``serve_web`` on shutdown (the scope key), so sockets close at once.
CLOSING_KEY = "nectoproxy.closing"
#: ``serve_web``'s function that resets the connection (the scope key).
ABORT_KEY = "nectoproxy.abort"
#: How long a dropped client has to read up to the close frame before its socket is reset.
CLOSE_LINGER = 5.0


@dataclass
class Feed:
    """One connection's position in the changes feed; :meth:`next_message` runs in a thread."""

    store: FlowStore
    marker: int
    session_id: int | None = None
    sessions_key: tuple[tuple[int, str, bool], ...] | None = None
    #: Dropped for not reading: its socket is reset after CLOSE_LINGER.
    dropped: bool = False
    #: Live settings changed through the API are announced (``{"type": "settings"}``).
    settings: SettingsRegistry | None = None
    settings_version: int = 0
    #: Flows paused at breakpoints are announced (``breakpoint:hit`` / ``breakpoint:resumed``).
    paused: PausedFlows | None = None
    paused_version: int = 0

    def _breakpoints(self) -> str | None:
        events = self.paused.events_since(self.paused_version) if self.paused else []
        if not events:
            return None
        self.paused_version, event = events[0]
        return json.dumps(event)

    #: Where this connection is in the WebSocket events (``store.websocket_events_since``).
    websocket_marker: int = 0
    _websocket_turn: bool = False

    def _settings(self) -> str | None:
        changes = self.settings.changes_since(self.settings_version) if self.settings else []
        if not changes:
            return None
        self.settings_version, name = changes[0]
        return json.dumps({"type": "settings", "name": name})

    def _sessions(self) -> str | None:
        sessions = self.store.list_sessions()
        key = tuple((s.id, s.name, s.active) for s in sessions)
        if key == self.sessions_key:
            return None
        self.sessions_key = key
        return json.dumps({"type": "sessions", "sessions": [s.to_json() for s in sessions]})

    def next_message(self) -> str | None:
        """The message to send now, if any (one per call: sessions first, then settings,
        breakpoints, flows)."""
        first = self._sessions() or self._settings() or self._breakpoints()
        if first is not None:
            return first
        self._websocket_turn = not self._websocket_turn
        if self._websocket_turn:
            return self._websocket() or self._flows()
        return self._flows() or self._websocket()

    def _websocket(self) -> str | None:
        """The next WebSocket event (a flow's messages in a row: one message)."""
        events = self.store.websocket_events_since(self.websocket_marker, limit=PAGE)
        message: dict[str, Any] | None = None
        for event, session_id in events:
            if self.session_id is not None and session_id != self.session_id:
                self.websocket_marker = event.id
                continue
            if message is None:
                data = event.to_json()
                message = {"type": f"websocket:{'frame' if event.kind == 'message' else event.kind}",
                           "trafficId": event.flow_id}
                if event.kind == "message":
                    message["frames"] = [data]
                else:
                    message.update((k, v) for k, v in data.items()
                                   if k not in ("id", "trafficId", "kind"))
            elif event.kind == "message" and message.get("frames") is not None and \
                    event.flow_id == message["trafficId"]:
                message["frames"].append(event.to_json())
            else:
                break
            self.websocket_marker = event.id
        return None if message is None else json.dumps(message)

    def _flows(self) -> str | None:
        flows: dict[str, FlowSummary] = {}
        deleted: dict[str, None] = {}
        marker = self.marker
        while True:
            changes = self.store.changes_since(marker, limit=PAGE)
            if changes.reset or len(flows) + len(deleted) >= MAX_BATCH:
                self.marker = self.store.current_marker()
                return json.dumps({"type": "reset"})
            for summary in changes.flows:
                flows.pop(summary.id, None)  # a re-added key moves to the end: latest order
                flows[summary.id] = summary
            for flow_id in changes.deleted:
                flows.pop(flow_id, None)
                deleted[flow_id] = None
            marker = changes.marker
            if not changes.more:
                break
        self.marker = marker
        wanted = [s.to_json() for s in flows.values()
                  if self.session_id is None or s.session_id == self.session_id]
        if not wanted and not deleted:
            return None
        return json.dumps({"type": "flows", "flows": wanted, "deleted": list(deleted)})


async def _read(websocket: WebSocket, feed: Feed, scope: anyio.CancelScope) -> None:
    """Take the client's messages (subscriptions) until it disconnects."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                data = json.loads(message.get("text") or "")
            except ValueError:
                continue  # not JSON, or a binary frame: ignored
            if isinstance(data, dict) and data.get("type") == "subscribe":
                session_id = data.get("sessionId")
                if session_id is None or isinstance(session_id, int):
                    feed.session_id = session_id
    finally:
        scope.cancel()


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    # The close frame waits behind what the client has not read; it may be gone already.
    with anyio.move_on_after(1.0), contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.close(code, reason)


async def _send(websocket: WebSocket, ctx: WebContext, feed: Feed, scope: anyio.CancelScope) -> None:
    while True:
        started = anyio.current_time()
        message = await ctx.run(feed.next_message)
        if message is not None:
            with anyio.move_on_after(SEND_TIMEOUT) as sending:
                try:
                    await websocket.send_text(message)
                except (WebSocketDisconnect, RuntimeError):  # gone, or closed by _closing
                    scope.cancel()
                    return
            if sending.cancelled_caught:
                log.info("event socket: dropping a client that read nothing for %g s",
                         SEND_TIMEOUT)
                feed.dropped = True
                await _close(websocket, CLOSE_TOO_SLOW, "too slow: events were not read")
                scope.cancel()
                return
        await anyio.sleep_until(started + INTERVAL)


async def _closing(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    event = websocket.scope.get(CLOSING_KEY)
    if not isinstance(event, anyio.Event):
        return  # not served by serve_web: nothing tells it to stop
    await event.wait()
    await _close(websocket, CLOSE_GOING_AWAY, "the inspector is stopping")
    scope.cancel()


async def events(websocket: WebSocket) -> None:
    ctx = context(websocket)
    try:
        session_id = query_int(websocket, "sessionId")
    except ApiError as exc:
        await websocket.close(1008, exc.message)
        return
    feed = Feed(ctx.store, await ctx.run(ctx.store.current_marker), session_id,
                settings=ctx.settings, settings_version=ctx.settings.version if ctx.settings
                else 0, websocket_marker=await ctx.run(ctx.store.websocket_marker))
    feed.paused = paused_flows(ctx.settings)
    feed.paused_version = feed.paused.version if feed.paused else 0
    await websocket.accept()
    ctx.event_clients += 1
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_read, websocket, feed, group.cancel_scope)
            group.start_soon(_send, websocket, ctx, feed, group.cancel_scope)
            group.start_soon(_closing, websocket, group.cancel_scope)
    finally:
        ctx.event_clients -= 1
    abort = websocket.scope.get(ABORT_KEY)
    if feed.dropped and callable(abort):
        # Its send buffer may never drain (that is why it was dropped), and the server would
        # wait for it to before closing the socket: time to read the close frame, then a reset.
        closing = websocket.scope.get(CLOSING_KEY)
        with anyio.move_on_after(CLOSE_LINGER):
            await (closing.wait() if isinstance(closing, anyio.Event) else anyio.sleep_forever())
        abort()
