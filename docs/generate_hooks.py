"""Render docs/hooks.md from the hookspec docstrings: `python docs/generate_hooks.py`."""

from __future__ import annotations

import inspect
from pathlib import Path

from nectoproxy import hookspecs

ORDER = ["on_configure", "on_start", "on_stop", "on_connect", "on_request_headers", "on_request",
         "on_response_headers", "on_response", "on_complete", "on_error", "on_websocket_start",
         "on_websocket_message", "on_websocket_end", "on_cert_generated", "on_tunnel",
         "on_settings"]
INTRO = """# Hook reference

Every hook a plugin can implement. A plugin defines a function (or method) of the same name,
taking any subset of the parameters, sync or `async def`. This page is generated from the
docstrings in `nectoproxy/hookspecs.py` by `python docs/generate_hooks.py`, and
`tests/test_docs.py` fails when it is stale.

Order of a flow: `on_connect` (client connects; again per CONNECT) -> `on_request_headers` ->
`on_request` -> (origin) -> `on_response_headers` -> `on_response` -> `on_complete`, or `on_error` when it fails.
Lifecycle: `on_configure` -> `on_start` ... `on_stop`. `on_cert_generated` fires when a leaf
certificate is minted; `on_tunnel` when a connection relayed untouched (pass-through) ends.
`on_settings` collects the settings a plugin lets the inspector change while the proxy runs.

In any of `on_request_headers`, `on_request`, `on_response_headers` and `on_response`, a plugin
may call `flow.intercept()` to pause the flow once the hook returns (for the two head hooks,
once the body is buffered too), and `flow.resume()` later, from another task (see [Pausing a flow](plugins.md#pausing-a-flow)).

A WebSocket flow: `on_response` (the 101) -> `on_websocket_start` -> `on_websocket_message`
per message -> `on_websocket_end` -> `on_complete`.
"""


def render() -> str:
    parts = [INTRO]
    for name in ORDER:
        function = getattr(hookspecs, name)
        signature = str(inspect.signature(function)).replace("'", "")
        parts.append(f"## `{name}`\n\n```python\ndef {name}{signature}\n```\n\n"
                     f"{inspect.getdoc(function)}\n")
    return "\n".join(parts)


if __name__ == "__main__":
    Path(__file__).with_name("hooks.md").write_text(render())
