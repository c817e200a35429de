"""Rewrite HTML pages on their way to the browser: inject a banner, replace text.

Run it::

    nectoproxy -s examples/rewrite_html.py

Options, in nectoproxy.toml::

    [plugins.rewrite_html]
    # inserted right after the <body> tag ("" for none)
    banner = '<div style="background:#fd0;padding:4px">Seen by NectoProxy</div>'
    # plain-text replacements, applied in order to the whole page
    replace = { "Example Domain" = "Proxied Domain" }

Only complete ``text/html`` responses are touched. Compressed pages work as is:
``flow.response.text`` undoes the Content-Encoding (gzip, deflate, br when brotli is installed)
and setting it encodes the new page the same way, with Content-Length updated. Pages too large
to buffer (``proxy.body_buffer_limit``) stream through unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from nectoproxy import ConfigError, Flow

log = logging.getLogger("nectoproxy.examples.rewrite_html")

DEFAULT_BANNER = ('<div id="nectoproxy-banner" style="background:#fd0;color:#000;'
                  'padding:4px;font:14px sans-serif">Seen by NectoProxy</div>')
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)

banner = DEFAULT_BANNER
replacements: dict[str, str] = {}


def on_configure(options: Mapping[str, Any]) -> None:
    global banner, replacements
    unknown = sorted(set(options) - {"banner", "replace"})
    if unknown:
        raise ConfigError(f"[plugins.rewrite_html] unknown key {unknown[0]!r}")
    new_banner = options.get("banner", DEFAULT_BANNER)
    if not isinstance(new_banner, str):
        raise ConfigError(f"[plugins.rewrite_html] banner: expected a string, got "
                          f"{new_banner!r}")
    replace = options.get("replace", {})
    if not isinstance(replace, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in replace.items()):
        raise ConfigError("[plugins.rewrite_html] replace: expected a table of "
                          f"\"old text\" = \"new text\", got {replace!r}")
    banner, replacements = new_banner, dict(replace)


def rewrite(html: str) -> str:
    for old, new in replacements.items():
        html = html.replace(old, new)
    if banner:
        html = _BODY_TAG.sub(lambda m: m.group() + banner, html, count=1)
    return html


def on_response(flow: Flow) -> None:
    response = flow.response
    assert response is not None
    if response.streamed or "text/html" not in response.headers.get("content-type", "").lower():
        return
    try:
        html = response.text
    except ValueError as exc:  # a Content-Encoding this proxy cannot undo
        log.warning("not rewriting %s: %s", flow.request.url, exc)
        return
    if html:
        new = rewrite(html)
        if new != html:
            response.text = new
