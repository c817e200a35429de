"""A JSON schema of one rule (the keys of a ``[[rule]]`` table), for the inspector's API.

It documents the shape for clients; the checking itself is :mod:`nectoproxy_plugin_rules.schema`
(patterns, files, header names and combinations are more than a JSON schema says).
"""

from __future__ import annotations

from typing import Any

_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_STRING_MAP = {"type": "object", "additionalProperties": _STRING}
_MS = {"type": "number", "minimum": 0}
_STATUS = {"type": "integer", "minimum": 200, "maximum": 599}
_BODY = {"description": "A string (sent as it is) or an object/array (sent as JSON).",
         "type": ["string", "object", "array"]}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (),
         description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


_MODIFY = {
    "set_headers": _STRING_MAP, "remove_headers": _STRINGS, "set_query": _STRING_MAP,
    "remove_query": _STRINGS, "body": _BODY,
    "replace": {"type": "array", "items": _obj(
        {"find": _STRING, "replace": _STRING, "regex": {"type": "boolean"}},
        ("find", "replace"))},
}

RULE_SCHEMA: dict[str, Any] = _obj({
    "name": {"type": "string", "minLength": 1,
             "description": "Unique; the rule's id in /api/rules."},
    "enabled": {"type": "boolean", "default": True},
    "priority": {"type": "integer", "default": 0, "description": "Higher first."},
    "url": {"type": "string", "description": "A glob on the full URL, or /regex/."},
    "host": {"type": "string", "description": "A glob on the host (any case), or /regex/."},
    "path": {"type": "string", "description": "A glob on the path (no query), or /regex/."},
    "method": {"type": ["string", "array"], "items": _STRING},
    "headers": {**_STRING_MAP, "description": "Request header name -> pattern."},
    "body_contains": {"type": "string"},
    "mock": _obj({"status": _STATUS, "headers": _STRING_MAP, "body": _BODY,
                  "body_file": _STRING, "delay_ms": _MS}),
    "block": {"type": ["boolean", "object"], "properties": {"status": _STATUS, "body": _STRING},
              "additionalProperties": False},
    "delay": {"type": ["number", "object"], "minimum": 0,
              "properties": {"ms": _MS, "variance_ms": _MS}, "additionalProperties": False},
    "throttle": _obj({"bytes_per_second": {"type": "number", "exclusiveMinimum": 0},
                      "latency_ms": _MS}, ("bytes_per_second",)),
    "map_remote": {"type": ["string", "object"], "properties": {
        "url": _STRING, "keep_path": {"type": "boolean"}}, "additionalProperties": False},
    "map_local": {"type": ["string", "object"], "properties": {
        "path": _STRING, "strip_prefix": _STRING, "index": _STRING, "headers": _STRING_MAP},
        "additionalProperties": False},
    "modify_request": _obj(_MODIFY),
    "modify_response": _obj({**_MODIFY, "status": _STATUS}),
}, description="A rule: matchers (all must hold) and at least one action; see the rules "
   "plugin's README.")
