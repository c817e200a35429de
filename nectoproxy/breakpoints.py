"""Breakpoints: flows that match a filter pause, for a person to look at, edit and resume.

A breakpoint is a filter expression (the API's language, :mod:`nectoproxy.store.filters`)
and a phase: ``request`` (before the request goes to the origin), ``response`` (before the
client sees the answer) or ``both``. They are kept in ``$NECTOPROXY_HOME/breakpoints.toml``
(so they survive a restart) and edited through the live-settings mechanism
(``/api/settings/breakpoints``, and ``/api/breakpoints`` one by one).

:class:`Breakpoints` is the plugin the inspector adds to the proxy (``breakpoints``; it uses
the flow store's filters, which the engine may not import, so it is not among
:mod:`nectoproxy.builtin_plugins`). It matches a flow's head in ``on_request_headers`` and
``on_response_headers`` and calls ``flow.intercept()``: the engine buffers that message's body
and holds the flow, and only it (see :meth:`nectoproxy.flow.Flow.intercept`), so flows that
match nothing are never buffered. Filters therefore see heads: ``body:`` terms match nothing.
The paused flows are in :class:`PausedFlows`, which the web API lists and resumes (continue
with changes, abort, or answer with a mock); ``proxy.intercept_timeout`` continues one that
nobody resumes.

A flow pauses in the process that serves it, and only the first process serves the API: with
``workers`` > 1 each worker's paused flows reach the first one's :class:`PausedFlows` through
a pipe (:mod:`nectoproxy.breakpointlink`), which lists and resumes them as its own.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread

from nectoproxy.capture import record_from_flow
from nectoproxy.config import Config
from nectoproxy.flow import Flow, Headers, Response
from nectoproxy.settings import LiveFile, SettingsError, SettingsProvider, checked_object
from nectoproxy.store.filters import Filter, FilterError, parse_filter

log = logging.getLogger("nectoproxy.breakpoints")

FILE_NAME = "breakpoints.toml"
MAX_BREAKPOINTS = 1000
PHASES = ("request", "response", "both")
ACTIONS = ("continue", "abort", "mock")
#: Paused flows whose resumptions the event socket still announces (it reads the newest).
_CHANGES_KEPT = 1000
_HEADER = ("# Breakpoints (flows that pause for a person), kept by NectoProxy's inspector.\n"
           "# Edited by hand, the file is reloaded within a second.\n")


@dataclasses.dataclass(frozen=True)
class Breakpoint:
    id: str
    filter: Filter
    phase: str = "both"
    enabled: bool = True
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "filter": self.filter.text,
                "phase": self.phase, "enabled": self.enabled}


def check_breakpoint(value: Any, field: str) -> Breakpoint:
    """A breakpoint from its JSON/TOML table; SettingsError naming the field else."""
    if not isinstance(value, dict):
        raise SettingsError(f"{field}: expected an object with filter and phase", field)
    unknown = set(value) - {"id", "name", "filter", "phase", "enabled"}
    if unknown:
        key = min(unknown)
        raise SettingsError(f"{field}.{key}: unknown key (known: id, name, filter, phase, "
                            "enabled)", f"{field}.{key}")
    text = value.get("filter", "")
    if not isinstance(text, str):
        raise SettingsError(f"{field}.filter: expected a filter expression", f"{field}.filter")
    try:
        parsed = parse_filter(text)
    except FilterError as exc:
        raise SettingsError(f"{field}.filter: {exc.message} at {exc.position}",
                            f"{field}.filter") from None
    phase = value.get("phase", "both")
    if phase not in PHASES:
        raise SettingsError(f"{field}.phase: expected one of {', '.join(PHASES)}, got "
                            f"{phase!r}", f"{field}.phase")
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SettingsError(f"{field}.enabled: expected true or false", f"{field}.enabled")
    name = value.get("name", "")
    if not isinstance(name, str):
        raise SettingsError(f"{field}.name: expected a string", f"{field}.name")
    ident = value.get("id") or secrets.token_hex(4)
    if not isinstance(ident, str) or not ident.isascii() or not ident.replace("-", "").isalnum():
        raise SettingsError(f"{field}.id: letters, digits and dashes", f"{field}.id")
    return Breakpoint(ident, parsed, phase, enabled, name)


def check_breakpoints(value: Any, field: str = "breakpoints") -> list[Breakpoint]:
    if not isinstance(value, list):
        raise SettingsError(f"{field}: expected a list of breakpoints", field)
    if len(value) > MAX_BREAKPOINTS:
        raise SettingsError(f"{field}: at most {MAX_BREAKPOINTS} breakpoints", field)
    found = [check_breakpoint(item, f"{field}[{n}]") for n, item in enumerate(value)]
    ids = [b.id for b in found]
    for n, ident in enumerate(ids):
        if ident in ids[:n]:
            raise SettingsError(f"{field}[{n}].id: {ident!r} is taken", f"{field}[{n}].id")
    return found


def read_breakpoints(path: Path) -> list[Breakpoint]:
    """The file's breakpoints ([] when it does not exist); ValueError naming the file."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    unknown = set(document) - {"breakpoint"}
    if unknown:
        raise ValueError(f"{path}: unknown key {min(unknown)!r} (known: breakpoint)")
    try:
        return check_breakpoints(document.get("breakpoint", []), "breakpoint")
    except SettingsError as exc:
        raise ValueError(f"{path}: {exc.message}") from None


def breakpoints_document(breakpoints: list[Breakpoint]) -> dict[str, Any]:
    """The TOML document of the breakpoints file."""
    return {"breakpoint": [b.to_json() for b in breakpoints]}


def live_record(flow: Flow) -> dict[str, Any]:
    """What a filter reads of a flow in flight: the fields of its store record so far."""
    record = record_from_flow(flow)
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


# -- paused flows -----------------------------------------------------------------------------


def _body(message: Any) -> str | None:
    """A buffered body as text (decoded), or None while it streams."""
    try:
        return message.text  # type: ignore[no-any-return]
    except ValueError:  # an undecodable Content-Encoding: the bytes as they are
        raw = message.raw_content
        return None if raw is None else raw.decode("utf-8", errors="replace")


@dataclasses.dataclass
class Paused:
    """A flow held at a breakpoint."""

    flow: Flow
    phase: str  # "request" or "response"
    breakpoint: str
    paused_at: float = dataclasses.field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        request = self.flow.request
        shown: dict[str, Any] = {
            "id": self.flow.id, "phase": self.phase, "breakpointId": self.breakpoint,
            "pausedAt": self.paused_at,
            "request": {"method": request.method, "url": request.url,
                        "headers": [list(f) for f in request.headers.fields],
                        "body": _body(request)},
            "response": None}
        response = self.flow.response
        if response is not None:
            shown["response"] = {"status": response.status_code, "reason": response.reason,
                                 "headers": [list(f) for f in response.headers.fields],
                                 "body": _body(response)}
        return shown


class ResumeError(ValueError):
    """Modifications that cannot apply; ``field`` says which."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class WorkerUnavailable(Exception):
    """The worker process holding a paused flow did not answer (it is stopping, or stuck)."""


def _headers(value: Any, field: str) -> Headers:
    if isinstance(value, dict):
        value = list(value.items())
    if not isinstance(value, list) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p)
            for p in value):
        raise ResumeError(f"{field}: expected [[name, value], ...]", field)
    return Headers([(str(k), str(v)) for k, v in value])


def _check_body(message: Any, changes: Mapping[str, Any]) -> str | None:
    if "body" not in changes:
        return None
    value = changes["body"]
    if not isinstance(value, str):
        raise ResumeError("modifications.body: expected the body as text", "modifications.body")
    if message.raw_content is None:
        raise ResumeError("modifications.body: this body streams (larger than "
                          "proxy.body_buffer_limit) and cannot be replaced",
                          "modifications.body")
    return value


def _status(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 100 <= value <= 999:
        raise ResumeError(f"{field}: expected a status code (100-999)", field)
    return value


def apply_modifications(paused: Paused, changes: Mapping[str, Any]) -> None:
    """Edit the paused flow as ``changes`` says: the request's ``method``, ``url``,
    ``headers``, ``body`` at the request phase; the response's ``status``, ``headers``,
    ``body`` at the response phase. Everything is checked before anything changes."""
    flow = paused.flow
    request_phase = paused.phase == "request"
    known = {"method", "url", "headers", "body"} if request_phase else \
        {"status", "headers", "body"}
    unknown = set(changes) - known
    if unknown:
        key = min(unknown)
        raise ResumeError(f"modifications.{key}: not editable at the {paused.phase} phase "
                          f"(editable: {', '.join(sorted(known))})", f"modifications.{key}")
    message: Any = flow.request if request_phase else flow.response
    headers = _headers(changes["headers"], "modifications.headers") \
        if "headers" in changes else None
    body = _check_body(message, changes)
    if request_phase:
        method = changes.get("method", message.method)
        if not isinstance(method, str) or not method.isalpha():
            raise ResumeError("modifications.method: expected a method such as GET",
                              "modifications.method")
        url = changes.get("url", message.url)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ResumeError("modifications.url: expected an absolute http(s) URL",
                              "modifications.url")
        message.method = method.upper()
        if url != message.url:
            message.url = url
    else:
        message.status_code = _status(changes.get("status", message.status_code),
                                      "modifications.status")
    if headers is not None:
        message.headers.fields = headers.fields
    if body is not None:
        message.text = body


def mock_response(changes: Mapping[str, Any]) -> Response:
    """The answer of a ``mock`` resumption: ``status`` (200), ``headers``, ``body`` (text)."""
    unknown = set(changes) - {"status", "headers", "body"}
    if unknown:
        key = min(unknown)
        raise ResumeError(f"modifications.{key}: a mock has status, headers and body",
                          f"modifications.{key}")
    status = _status(changes.get("status", 200), "modifications.status")
    headers = _headers(changes.get("headers", []), "modifications.headers")
    body = changes.get("body", "")
    if not isinstance(body, str):
        raise ResumeError("modifications.body: expected the body as text", "modifications.body")
    return Response.make(status, body, headers)


class Holder(Protocol):
    """The process that holds a flow paused elsewhere (a worker: its pipe's end,
    :class:`nectoproxy.breakpointlink.WorkerLink`)."""

    def resume(self, flow_id: str, action: str, changes: Any) -> dict[str, Any]:
        """Resume it there (in a thread); the flow as resumed, KeyError or ResumeError."""

    def shown(self, flow_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Those of ``flow_ids`` still paused there, as they are now (in a thread)."""


@dataclasses.dataclass
class Elsewhere:
    """A flow paused in another worker process, as it announced itself."""

    shown: dict[str, Any]
    holder: Holder

    @property
    def paused_at(self) -> float:
        return float(self.shown.get("pausedAt", 0))

    def to_json(self) -> dict[str, Any]:
        return self.shown


class PausedFlows:
    """The flows held at breakpoints in this process (and, in the first one, in the worker
    processes), and what became of them (for the event socket: ``breakpoint:hit``,
    ``breakpoint:resumed``).

    Pausing, listing and resuming happen on the event loop; the event socket reads
    :meth:`events_since` from a worker thread, and the pipes of worker processes are read by
    threads of their own, hence the lock.
    """

    def __init__(self) -> None:
        self._paused: dict[str, Paused] = {}
        self._elsewhere: dict[str, Elsewhere] = {}
        self._lock = threading.Lock()
        self.version = 0
        self._events: list[tuple[int, dict[str, Any]]] = []
        #: In a worker process: where its announcements go (the pipe to the first process).
        self.forward: Callable[[dict[str, Any]], None] | None = None

    def _announce(self, event: dict[str, Any]) -> None:
        if self.forward is not None:  # (a worker: nobody reads its own events)
            self.forward(event)
            return
        with self._lock:
            self.version += 1
            self._events.append((self.version, event))
            del self._events[:-_CHANGES_KEPT]

    def holding(self) -> bool:
        """Whether a flow is paused in this process."""
        with self._lock:
            return bool(self._paused)

    def remote_event(self, event: dict[str, Any], holder: Holder) -> None:
        """A worker process announced ``event`` about a flow it holds: keep track, and
        announce it here (called from the thread reading that worker's pipe)."""
        with self._lock:
            if event["type"] == "breakpoint:hit":
                self._elsewhere[event["flow"]["id"]] = Elsewhere(event["flow"], holder)
            else:
                self._elsewhere.pop(event["id"], None)
        self._announce(event)

    def remote_gone(self, holder: Holder) -> None:
        """A worker process stopped: the flows it held went with it."""
        with self._lock:
            gone = [e for e in self._elsewhere.values() if e.holder is holder]
            for elsewhere in gone:
                del self._elsewhere[elsewhere.shown["id"]]
        for elsewhere in gone:
            self._announce({"type": "breakpoint:resumed", "id": elsewhere.shown["id"],
                            "action": "gone", "phase": elsewhere.shown["phase"]})

    def add(self, paused: Paused) -> None:
        with self._lock:
            earlier = self._paused.pop(paused.flow.id, None)
            self._paused[paused.flow.id] = paused
        if earlier is not None:  # (at its request: went on without the API, not yet pruned)
            self._announce({"type": "breakpoint:resumed", "id": paused.flow.id,
                            "action": "timeout", "phase": earlier.phase})
        self._announce({"type": "breakpoint:hit", "flow": paused.to_json()})
        log.info("%s %s paused at breakpoint %s (%s)", paused.flow.request.method,
                 paused.flow.request.url, paused.breakpoint, paused.phase)

    def _drop(self, flow_id: str, action: str) -> Paused | None:
        with self._lock:
            paused = self._paused.pop(flow_id, None)
        if paused is not None:
            self._announce({"type": "breakpoint:resumed", "id": flow_id, "action": action,
                            "phase": paused.phase})
        return paused

    def prune(self) -> None:
        """Forget the flows that went on without the API: continued by
        ``proxy.intercept_timeout``, or resumed by a plugin."""
        with self._lock:
            gone = [i for i, p in self._paused.items() if not p.flow.intercepted]
        for flow_id in gone:
            self._drop(flow_id, "timeout")

    def ended(self, flow: Flow) -> None:
        """The flow failed while paused (its client left): forget it."""
        if flow.intercepted:
            self._drop(flow.id, "gone")

    def current(self) -> list[Paused | Elsewhere]:
        """Every paused flow, oldest first (this process's and the worker processes')."""
        self.prune()
        with self._lock:
            found: list[Paused | Elsewhere] = [*self._paused.values(),
                                               *self._elsewhere.values()]
        return sorted(found, key=lambda p: p.paused_at)

    def get(self, flow_id: str) -> Paused | Elsewhere | None:
        self.prune()
        with self._lock:
            return self._paused.get(flow_id) or self._elsewhere.get(flow_id)

    async def shown(self, flow_id: str | None = None) -> list[dict[str, Any]]:
        """The paused flows (or the one ``flow_id``) as the API shows them, oldest first; a
        worker process is asked for its own (off the loop), as their bodies arrived since
        they were announced."""
        found = self.current() if flow_id is None else \
            [p for p in [self.get(flow_id)] if p is not None]
        holders: dict[int, tuple[Holder, list[str]]] = {}
        for elsewhere in found:
            if isinstance(elsewhere, Elsewhere):
                holder = elsewhere.holder
                holders.setdefault(id(holder), (holder, []))[1].append(elsewhere.shown["id"])
        now: dict[str, dict[str, Any]] = {}
        for holder, ids in holders.values():
            now |= await anyio.to_thread.run_sync(holder.shown, ids)
        return [p.to_json() if isinstance(p, Paused) else now[p.shown["id"]]
                for p in found if isinstance(p, Paused) or p.shown["id"] in now]

    async def resume_anywhere(self, flow_id: str, action: str, changes: Mapping[str, Any]
                              ) -> dict[str, Any]:
        """:meth:`resume` a flow paused here or in a worker process (asked through its pipe,
        off the loop): the flow as resumed."""
        found = self.get(flow_id)
        if isinstance(found, Elsewhere):
            return await anyio.to_thread.run_sync(found.holder.resume, flow_id, action,
                                                  dict(changes))
        return self.resume(flow_id, action, changes).to_json()

    def resume(self, flow_id: str, action: str, changes: Mapping[str, Any]) -> Paused:
        """Resume a paused flow (on the event loop): KeyError if it is not paused,
        ResumeError for an unknown action or changes that cannot apply (nothing changes)."""
        self.prune()
        with self._lock:
            paused = self._paused.get(flow_id)
        if paused is None:
            raise KeyError(flow_id)
        if action not in ACTIONS:
            raise ResumeError(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}",
                              "action")
        flow = paused.flow
        if action == "continue":
            apply_modifications(paused, changes)
        elif action == "mock":
            flow.response = mock_response(changes)
            flow.metadata["breakpoint"] = "mocked"
        if (changes or action == "mock") and "breakpoints" not in flow.modified_by:
            flow.modified_by.append("breakpoints")  # (the inspector shows who changed a flow)
        self._drop(flow_id, action)
        if action == "abort":
            flow.kill("aborted at a breakpoint")
        else:
            flow.resume()
        log.info("%s %s: %s at breakpoint %s", flow.request.method, flow.request.url,
                 action, paused.breakpoint)
        return paused

    def events_since(self, version: int) -> list[tuple[int, dict[str, Any]]]:
        self.prune()
        with self._lock:
            return [event for event in self._events if event[0] > version]


# -- the plugin -------------------------------------------------------------------------------


class Breakpoints:
    """The ``breakpoints`` plugin (one per process: with ``workers`` > 1, each pauses the
    flows its process serves)."""

    name = "breakpoints"
    #: Its hooks only pause; what a person changes meanwhile is recorded by PausedFlows.
    changes_flows = False

    def __init__(self, config: Config) -> None:
        self.path = config.home_dir / FILE_NAME
        self.breakpoints: tuple[Breakpoint, ...] = ()
        self.paused = PausedFlows()
        self.live = LiveFile(self.path, read_breakpoints, self._apply, what="breakpoints",
                             logger=log, header=_HEADER)
        self.live.load()

    def _apply(self, found: list[Breakpoint]) -> None:
        self.breakpoints = tuple(b for b in found if b.enabled)

    def _matching(self, flow: Flow, phase: str) -> Breakpoint | None:
        if flow.metadata.get("breakpoint") == "mocked":
            return None  # answered at its request breakpoint: nothing more to look at
        record: dict[str, Any] | None = None
        for breakpoint in self.breakpoints:
            if breakpoint.phase not in (phase, "both"):
                continue
            record = record if record is not None else live_record(flow)
            if breakpoint.filter.matches(record):
                return breakpoint
        return None

    def _pause_if_matching(self, flow: Flow, phase: str) -> None:
        if not self.breakpoints or flow.killed:
            return
        breakpoint = self._matching(flow, phase)
        if breakpoint is not None:
            flow.intercept()
            self.paused.add(Paused(flow, phase, breakpoint.id))

    def on_request_headers(self, flow: Flow) -> Awaitable[None] | None:
        return self.live.then(self._pause_if_matching, flow, "request")

    def on_response_headers(self, flow: Flow) -> Awaitable[None] | None:
        return self.live.then(self._pause_if_matching, flow, "response")

    def on_error(self, flow: Flow) -> None:
        self.paused.ended(flow)

    def on_settings(self) -> list[SettingsProvider]:
        return [BreakpointSettings(self)]


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "breakpoints": {"type": "array", "maxItems": MAX_BREAKPOINTS, "items": {
            "type": "object", "properties": {
                "id": {"type": "string", "description": "Made when missing."},
                "name": {"type": "string"},
                "filter": {"type": "string", "description": "A filter expression (the flow "
                           "list's language); empty: every flow. Heads only: body terms match "
                           "nothing."},
                "phase": {"enum": list(PHASES)},
                "enabled": {"type": "boolean"}},
            "required": ["filter"], "additionalProperties": False}},
        "file": {"type": "string", "readOnly": True},
        "error": {"type": "string", "readOnly": True, "description":
                  "Why the file, edited by hand, was not applied."},
    },
    "required": ["breakpoints"],
    "additionalProperties": False,
}


class BreakpointSettings:
    """``/api/settings/breakpoints``: ``{"breakpoints": [...]}``."""

    name = "breakpoints"
    title = "Breakpoints"
    description = ("Flows matching a breakpoint's filter pause at its phase (request, "
                   "response or both) until resumed in the inspector. Kept in "
                   "$NECTOPROXY_HOME/breakpoints.toml.")

    def __init__(self, plugin: Breakpoints) -> None:
        self.plugin = plugin
        self.schema = SCHEMA

    def get(self) -> dict[str, Any]:
        value: dict[str, Any] = {"file": str(self.plugin.path)}
        try:
            value["breakpoints"] = [b.to_json() for b in read_breakpoints(self.plugin.path)]
        except ValueError as exc:
            value["breakpoints"] = [b.to_json() for b in self.plugin.breakpoints]
            value["error"] = str(exc)
        return value

    def put(self, value: Any) -> dict[str, Any]:
        found = check_breakpoints(checked_object(value, SCHEMA)["breakpoints"])
        self.plugin.live.write(breakpoints_document(found), found, field="breakpoints")
        return self.get()
