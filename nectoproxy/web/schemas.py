"""JSON schemas of what the API answers, derived from the store's record classes.

The records' ``to_json()`` is what every endpoint returns, so their schemas are computed from
the dataclass fields and their type hints (camelCase names, as ``to_json`` spells them): a field
added to a record appears in ``/api/openapi.json`` without anyone editing a schema by hand.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

from nectoproxy.store.records import (
    MARK_COLOURS,
    FlowRecord,
    FlowSummary,
    Session,
    Stats,
    camel,
)

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Mapping[str, Any]) -> Schema:
    return {"anyOf": [dict(schema), {"type": "null"}]}


def array(items: Mapping[str, Any]) -> Schema:
    return {"type": "array", "items": dict(items)}


def obj(properties: Mapping[str, Any], required: tuple[str, ...] | None = None,
        **extra: Any) -> Schema:
    """An object schema; every property is required unless ``required`` says otherwise."""
    return {"type": "object", "properties": dict(properties),
            "required": list(properties if required is None else required), **extra}


def type_schema(hint: Any) -> Schema:
    """The JSON schema of a value of type ``hint`` after ``to_json()``."""
    origin = get_origin(hint)
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is type(None):
        return {"type": "null"}
    if origin is Literal:
        return {"enum": list(get_args(hint))}
    if origin in (Union, types.UnionType):
        return {"anyOf": [type_schema(arg) for arg in get_args(hint)]}
    if origin is list:
        return array(type_schema(get_args(hint)[0]))
    if origin is tuple:
        items = [type_schema(arg) for arg in get_args(hint)]
        return {"type": "array", "prefixItems": items, "minItems": len(items),
                "maxItems": len(items)}
    if origin is dict:
        return {"type": "object", "additionalProperties": type_schema(get_args(hint)[1])}
    if is_typeddict(hint):
        hints = get_type_hints(hint)
        return obj({camel(k): type_schema(v) for k, v in hints.items()}, required=(),
                   additionalProperties=False)
    raise TypeError(f"no JSON schema for {hint!r}")


def record_schema(cls: type[Any], overrides: Mapping[str, Schema] | None = None) -> Schema:
    """The schema of ``cls().to_json()`` for a record dataclass."""
    hints = get_type_hints(cls)
    properties = {camel(f.name): type_schema(hints[f.name]) for f in dataclasses.fields(cls)}
    properties.update(overrides or {})
    return obj(properties, additionalProperties=False)


_COUNT = {"type": "integer", "minimum": 0}
MARK = {"anyOf": [{"enum": list(MARK_COLOURS)}, {"type": "null"}]}
HEADERS = {"type": "array", "description": "Header fields in order, names as on the wire.",
           "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string"}],
                     "minItems": 2, "maxItems": 2}}

ERROR = obj({"error": {"type": "string"}, "position": {"type": "integer"},
             "field": {"type": "string"}}, required=("error",),
            description="Every refusal and failure; filter syntax errors add the position "
            "(0-based) of the mistake, refused settings the field.")

EVENT = {
    "description": "A message of the event socket.",
    "oneOf": [
        obj({"type": {"const": "flows"}, "flows": array(ref("FlowSummary")),
             "deleted": array({"type": "string"})}),
        obj({"type": {"const": "sessions"}, "sessions": array(ref("Session"))}),
        obj({"type": {"const": "reset"}}),
        obj({"type": {"const": "settings"}, "name": {"type": "string"}}),
        obj({"type": {"const": "websocket:open"}, "trafficId": {"type": "string"},
             "subprotocol": {"type": ["string", "null"]},
             "extensions": {"type": ["string", "null"]}}),
        obj({"type": {"const": "websocket:frame"}, "trafficId": {"type": "string"},
             "frames": array(ref("WebSocketFrame"))}),
        obj({"type": {"const": "websocket:close"}, "trafficId": {"type": "string"},
             "code": {"type": ["integer", "null"]}, "reason": {"type": "string"},
             "closedBy": {"enum": ["client", "server", None]}}),
    ],
}

WEBSOCKET_FRAME = obj({
    "id": {"type": "integer"}, "trafficId": {"type": "string"},
    "kind": {"enum": ["open", "message", "close"]}, "timestamp": {"type": "number"},
    "direction": {"enum": ["client", "server"]}, "type": {"enum": ["text", "binary"]},
    "size": _COUNT, "injected": {"type": "boolean"}, "truncated": {"type": "boolean"},
    "content": {"type": "string"}, "contentBase64": {"type": "string",
                                                     "contentEncoding": "base64"},
    "subprotocol": {"type": ["string", "null"]}, "extensions": {"type": ["string", "null"]},
    "code": {"type": ["integer", "null"]}, "reason": {"type": "string"},
    "closedBy": {"enum": ["client", "server", None]}, "messagesFromClient": _COUNT,
    "messagesFromServer": _COUNT,
}, required=("id", "trafficId", "kind", "timestamp"), description="An opening, message or "
    "close of a WebSocket flow; a message has direction, type, size (the whole message's), "
    "injected and truncated (its content was cut in storage), and with ``/frame/{id}`` its "
    "content.")

REPLAY_EDITS = obj({
    "method": {"type": "string"}, "url": {"type": "string", "format": "uri"},
    "headers": HEADERS, "body": {"type": "string", "description": "UTF-8 text"},
    "bodyBase64": {"type": "string", "contentEncoding": "base64"},
}, required=(), additionalProperties=False,
    description="Changes to the recorded request (a field left out keeps the recorded "
    "value); `headers` replaces the whole list.")

COMPONENTS: dict[str, Schema] = {
    "FlowSummary": record_schema(FlowSummary, {"mark": MARK}),
    "FlowRecord": record_schema(FlowRecord, {
        "mark": MARK, "requestHeaders": HEADERS, "requestHeadersSent": nullable(HEADERS),
        "responseHeaders": nullable(HEADERS), "responseHeadersSent": nullable(HEADERS),
        "requestTrailers": nullable(HEADERS), "responseTrailers": nullable(HEADERS)}),
    "Session": record_schema(Session),
    "Stats": record_schema(Stats, {
        "hosts": array(obj({"host": {"type": "string"}, "count": _COUNT})),
        "contentTypes": array(obj({"contentType": {"type": "string"}, "count": _COUNT})),
    }),
    "Error": ERROR,
    "TrafficPage": obj({"entries": array(ref("FlowSummary")),
                        "next": {"type": ["integer", "string", "null"],
                                 "description": "The cursor of the next page; null after the "
                                 "last. With `sort`, the JSON text `[key, seq]` of the page's "
                                 "last row."}}),
    "SessionList": obj({"sessions": array(ref("Session"))}),
    "Deleted": obj({"deleted": {"type": ["integer", "boolean"]}}),
    "ReplayEdits": REPLAY_EDITS,
    "Replay": obj({"id": {"type": "string"}, "replayOf": {"type": ["string", "null"]},
                   "status": {"type": ["integer", "null"]},
                   "error": {"type": ["string", "null"]}, "flow": ref("FlowRecord")},
                  required=("id", "replayOf", "status", "error")),
    "Annotations": obj({"mark": MARK, "tags": array({"type": "string"}),
                        "comment": {"type": "string"}}, required=(),
                       additionalProperties=False),
    "Status": obj({"version": {"type": "string"}, "store": obj({
        "sessions": _COUNT, "flows": _COUNT, "storedBytes": _COUNT,
        "activeSession": ref("Session"), "marker": {"type": "integer"},
        "path": {"type": "string"}, "fileBytes": _COUNT},
        required=("sessions", "flows", "storedBytes", "activeSession", "marker")),
        "eventClients": _COUNT,
        "capturing": {"type": "boolean", "description": "Flows are being stored."},
        "paused": {"type": "boolean", "description": "Capture is paused (PUT /api/capture)."}},
        required=("version", "store", "eventClients"),
        description="`status()`'s mapping (the proxy's own fields), plus these."),
    "Event": EVENT,
    "WebSocketFrame": WEBSOCKET_FRAME,
    "WebSocketFramePage": obj({"frames": array(ref("WebSocketFrame")),
                               "next": {"type": ["integer", "null"],
                                        "description": "`after` for the next page; null after "
                                        "the last."}}),
    "WebSocketCount": obj({"count": _COUNT, "open": {"type": "boolean", "description":
                                                     "Messages can be sent now."}}),
    "WebSocketSend": obj({"to": {"enum": ["server", "client"]}, "content": {"type": "string"},
                          "contentBase64": {"type": "string", "contentEncoding": "base64"}},
                         required=("to",), additionalProperties=False,
                         description="A text message (content) or a binary one "
                         "(contentBase64), to the origin (server) or to the client."),
    "WebSocketSent": obj({"sent": {"type": "boolean"}, "to": {"enum": ["server", "client"]},
                          "type": {"enum": ["text", "binary"]}, "size": _COUNT}),
    "Har": {"type": "object", "description": "A HAR 1.2 document.",
            "properties": {"log": {"type": "object"}}, "required": ["log"]},
}
