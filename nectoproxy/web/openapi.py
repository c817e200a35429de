"""``/api/openapi.json``: an OpenAPI 3.1 document built from the route table."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from nectoproxy.web.common import Endpoint
from nectoproxy.web.schemas import COMPONENTS

DESCRIPTION = """The REST API and event socket of NectoProxy's traffic inspector (docs/api.md).

Every call except `GET /api/health` needs the token: `Authorization: Bearer <token>`, or the
`nectoproxy_token` cookie that opening a page with `?token=<token>` sets; the event socket
also takes `?token=`. The Host header must name this machine (DNS rebinding is refused), and
cross-origin requests are refused; no CORS headers are sent."""


def _operation_id(endpoint: Endpoint) -> str:
    words = re.findall(r"[A-Za-z]+", endpoint.path.replace("{", " by ").replace("}", " "))
    name = endpoint.method.lower() + "".join(w[:1].upper() + w[1:] for w in words[1:])
    return name


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": _operation_id(endpoint), "summary": endpoint.summary,
        "tags": [endpoint.tag] if endpoint.tag else [],
    }
    if endpoint.params:
        operation["parameters"] = [
            {"name": p.name, "in": p.location, "required": p.required or p.location == "path",
             "schema": dict(p.schema), **({"description": p.description} if p.description
                                          else {})}
            for p in endpoint.params]
    if endpoint.body is not None:
        content = {media: {"schema": dict(endpoint.body) if media == "application/json" else
                           {"type": "object", "properties": {
                               "file": {"type": "string", "format": "binary"}}}}
                   for media in endpoint.body_content}
        operation["requestBody"] = {"required": endpoint.body_required, "content": content}
    responses: dict[str, Any] = {}
    for status, reply in sorted(endpoint.replies.items()):
        answer: dict[str, Any] = {"description": reply.description}
        if reply.schema is not None:
            answer["content"] = {reply.content: {"schema": dict(reply.schema)}}
        responses[str(status)] = answer
    if endpoint.token:
        responses.setdefault("401", {"description": "No valid token.", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
        operation["security"] = [{"bearer": []}, {"cookie": []}] + (
            [{"queryToken": []}] if endpoint.websocket else [])
    else:
        operation["security"] = []
    operation["responses"] = responses or {"200": {"description": "OK"}}
    return operation


def build(endpoints: Sequence[Endpoint], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {"title": "NectoProxy inspector API", "version": version,
                 "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "nectoproxy_token"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token",
                               "description": "The event socket only."},
            },
        },
    }
