"""Add headers to every request and remove headers from every response.

Run it::

    nectoproxy -s examples/add_header.py

or load it from nectoproxy.toml, with its options (all optional; these are the defaults)::

    [plugins]
    load = ["examples/add_header.py"]

    [plugins.add_header]
    # set on every request before it goes to the origin (replacing any value the client sent)
    request_headers = { "X-Proxied-By" = "NectoProxy" }
    # removed from every response before the client sees it
    remove_response_headers = ["Server", "X-Powered-By"]

Try it: ``curl -si --proxy http://127.0.0.1:8888 http://httpbin.org/headers``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nectoproxy import ConfigError, Flow

DEFAULT_REQUEST_HEADERS = {"X-Proxied-By": "NectoProxy"}
DEFAULT_REMOVE_RESPONSE_HEADERS = ["Server", "X-Powered-By"]

_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

request_headers: dict[str, str] = dict(DEFAULT_REQUEST_HEADERS)
remove_response_headers: list[str] = list(DEFAULT_REMOVE_RESPONSE_HEADERS)


def _header_name(name: object, key: str) -> str:
    if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
        raise ConfigError(f"[plugins.add_header] {key}: {name!r} is not a valid header name")
    return name


def on_configure(options: Mapping[str, Any]) -> None:
    global request_headers, remove_response_headers
    unknown = sorted(set(options) - {"request_headers", "remove_response_headers"})
    if unknown:
        raise ConfigError(f"[plugins.add_header] unknown key {unknown[0]!r}")
    adds = options.get("request_headers", DEFAULT_REQUEST_HEADERS)
    if not isinstance(adds, Mapping):
        raise ConfigError("[plugins.add_header] request_headers: expected a table of "
                          f"header = \"value\", got {adds!r}")
    for name, value in adds.items():
        _header_name(name, "request_headers")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise ConfigError(f"[plugins.add_header] request_headers.{name}: expected a "
                              f"one-line string, got {value!r}")
    removes = options.get("remove_response_headers", DEFAULT_REMOVE_RESPONSE_HEADERS)
    if not isinstance(removes, list):
        raise ConfigError("[plugins.add_header] remove_response_headers: expected a list of "
                          f"header names, got {removes!r}")
    request_headers = dict(adds)
    remove_response_headers = [_header_name(n, "remove_response_headers") for n in removes]


def on_request_headers(flow: Flow) -> None:
    # The headers hook, not on_request: this plugin never needs bodies, so they stream.
    for name, value in request_headers.items():
        flow.request.headers[name] = value


def on_response(flow: Flow) -> None:
    assert flow.response is not None
    for name in remove_response_headers:
        if name in flow.response.headers:
            del flow.response.headers[name]
