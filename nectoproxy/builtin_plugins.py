"""Behaviour that ships with NectoProxy, written as ordinary plugins (disable them by name)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from nectoproxy.config import Config
from nectoproxy.flow import Flow
from nectoproxy.onboarding import Onboarding
from nectoproxy.passthrough import LivePassthrough

flow_log = logging.getLogger("nectoproxy.flows")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n}b"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f}k"
    return f"{n / (1024 * 1024):.1f}m"


class FlowLog:
    """One console line per completed or failed flow: client, method, URL, status, bytes, ms."""

    changes_flows = False

    def _line(self, flow: Flow, outcome: str) -> str:
        client = flow.client_address
        ms = ((flow.timestamp_end or flow.timestamp_start) - flow.timestamp_start) * 1000
        return (f"{client[0]}:{client[1]} {flow.request.method} {flow.request.url} -> "
                f"{outcome} {_size(flow.response_body_size)} {ms:.0f}ms")

    def on_complete(self, flow: Flow) -> None:
        status = flow.response.status_code if flow.response else 0
        flow_log.info(self._line(flow, str(status)))

    def on_error(self, flow: Flow, error: str) -> None:
        status = flow.response.status_code if flow.response else "---"
        flow_log.warning(self._line(flow, f"{status} ({error})"))


def create(config: Config) -> Iterator[tuple[str, object]]:
    """The built-in plugins for a configuration, as (name, plugin) pairs."""
    yield "onboarding", Onboarding(config)
    yield "passthrough", LivePassthrough(config)
    if not config.log.quiet:
        yield "flowlog", FlowLog()
