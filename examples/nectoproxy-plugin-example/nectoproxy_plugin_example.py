"""nectoproxy-plugin-example: adds a greeting header to every response.

The smallest complete third-party NectoProxy plugin. It is one module, registered in the
``nectoproxy`` entry-point group by its ``pyproject.toml``; NectoProxy imports it at start-up
and calls the hooks below. Configure it in ``nectoproxy.toml``::

    [plugins.example]
    header_name = "X-Greeting"     # default "X-Example-Plugin"
    greeting = "hello"             # default "hello from nectoproxy-plugin-example"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import nectoproxy

__version__ = "0.1.0"
#: The plugin's name when it is passed in from Python (``Proxy(plugins=[module])``, the
#: ``make_proxy`` fixture); installed, it is named by its entry point, which is the same.
name = "example"

DEFAULTS: dict[str, str] = {
    "header_name": "X-Example-Plugin",
    "greeting": "hello from nectoproxy-plugin-example",
}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name characters

# The effective settings; replaced as a whole by each on_configure call.
settings: dict[str, str] = dict(DEFAULTS)


def _validate(options: Mapping[str, Any]) -> dict[str, str]:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise nectoproxy.ConfigError(
            f"[plugins.example] unknown key {unknown[0]!r} (known: {', '.join(DEFAULTS)})")
    result = dict(DEFAULTS)
    for key, value in options.items():
        if not isinstance(value, str):
            raise nectoproxy.ConfigError(
                f"[plugins.example] {key}: expected a string, got {value!r}")
        result[key] = value
    if not _TOKEN.fullmatch(result["header_name"]):
        raise nectoproxy.ConfigError(
            f"[plugins.example] header_name: {result['header_name']!r} is not a valid header name")
    if "\r" in result["greeting"] or "\n" in result["greeting"]:
        raise nectoproxy.ConfigError("[plugins.example] greeting: must be a single line")
    return result


@nectoproxy.hookimpl
def on_configure(options: Mapping[str, Any]) -> None:
    """Check the ``[plugins.example]`` table; a wrong key or type stops start-up."""
    global settings
    settings = _validate(options)


@nectoproxy.hookimpl
def on_response(flow: nectoproxy.Flow) -> None:
    """Add the greeting header to the response the client receives."""
    if flow.response is not None:
        flow.response.headers[settings["header_name"]] = settings["greeting"]
