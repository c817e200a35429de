"""Block hosts: plain-HTTP requests get a 403 page, HTTPS tunnels to them are refused.

Run it::

    nectoproxy -s examples/block_hosts.py

Options, in nectoproxy.toml::

    [plugins.block_hosts]
    # exact names, or "*.example.com" for example.com and every name under it
    hosts = ["ads.example.com", "*.doubleclick.net", "*.tracker.test"]
    message = "Blocked by your proxy."      # the text of the 403 answer

Blocked requests never leave the proxy: a plain-HTTP request is answered in
``on_request_headers``, before its body is read or its host name resolved, and a ``CONNECT``
for HTTPS is refused in ``on_connect`` before any TLS starts (the browser then shows its own
"proxy refused" error, since it cannot display a proxy's page for an HTTPS URL).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from nectoproxy import ConfigError, Connection, Flow, Response

log = logging.getLogger("nectoproxy.examples.block_hosts")

DEFAULT_HOSTS = ["*.doubleclick.net", "*.googlesyndication.com"]
DEFAULT_MESSAGE = "Blocked by NectoProxy (block_hosts)."

exact_hosts: frozenset[str] = frozenset()
suffixes: tuple[str, ...] = ()  # ".example.com" for "*.example.com"
message = DEFAULT_MESSAGE


def _normalize(host: str) -> str:
    return host.strip().rstrip(".").lower()


def set_hosts(patterns: Iterable[str]) -> None:
    global exact_hosts, suffixes
    names = [_normalize(p) for p in patterns]
    exact_hosts = frozenset(n.removeprefix("*.") for n in names)
    suffixes = tuple(n[1:] for n in names if n.startswith("*."))


def is_blocked(host: str) -> bool:
    host = _normalize(host)
    return host in exact_hosts or host.endswith(suffixes)


def on_configure(options: Mapping[str, Any]) -> None:
    global message
    unknown = sorted(set(options) - {"hosts", "message"})
    if unknown:
        raise ConfigError(f"[plugins.block_hosts] unknown key {unknown[0]!r}")
    hosts = options.get("hosts", DEFAULT_HOSTS)
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h.strip() for h in hosts):
        raise ConfigError(f"[plugins.block_hosts] hosts: expected a list of host names, "
                          f"got {hosts!r}")
    for pattern in hosts:
        if "*" in pattern.removeprefix("*."):
            raise ConfigError(f"[plugins.block_hosts] hosts: {pattern!r}: only a leading "
                              "\"*.\" wildcard is supported")
    text = options.get("message", DEFAULT_MESSAGE)
    if not isinstance(text, str):
        raise ConfigError(f"[plugins.block_hosts] message: expected a string, got {text!r}")
    set_hosts(hosts)
    message = text


def on_connect(connection: Connection) -> None:
    if connection.target is not None and is_blocked(connection.target[0]):
        log.info("refused CONNECT to %s:%s", *connection.target)
        connection.refuse(403, f"{message} ({connection.target[0]})")


def on_request_headers(flow: Flow) -> None:
    host = flow.request.host
    if is_blocked(host):
        log.info("blocked %s %s", flow.request.method, flow.request.url)
        flow.response = Response.make(403, f"{message} ({host})\n",
                                      {"Cache-Control": "no-store"})
