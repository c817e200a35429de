"""Helpers shared by the throttle plugin's tests (a uniquely named module, not a conftest)."""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nectoproxy_plugin_throttle import METADATA_KEY, Throttle

from nectoproxy import Flow


class Observer:
    """A plugin that keeps what the throttle plugin recorded on each finished or failed flow."""

    name = "throttle_observer"

    def __init__(self) -> None:
        self.records: list[dict[str, Any] | None] = []
        self.errors: list[str] = []

    def on_complete(self, flow: Flow) -> None:
        self.records.append(flow.metadata.get(METADATA_KEY))

    def on_error(self, flow: Flow, error: str) -> None:
        self.records.append(flow.metadata.get(METADATA_KEY))
        self.errors.append(error)


def throttled(make_proxy: Any, options: dict[str, Any], observer: Observer | None = None,
              **sections: dict[str, Any]) -> Any:
    """A proxy with a fresh Throttle (and the observer, if given) configured by ``options``."""
    plugins: list[object] = [Throttle()]
    if observer is not None:
        plugins.append(observer)
    return make_proxy(plugins=plugins, config={"plugins": {"throttle": options}, **sections})


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """Messages of the ``nectoproxy.throttle`` logger, whatever the root logger is set to."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("nectoproxy.throttle")
    handler, old_level = Keep(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def only_this_entry_point(**options: Any) -> dict[str, Any]:
    """A ``[plugins]`` table loading installed plugins, but none but this one (so that a
    plugin someone else is working on cannot break these tests)."""
    others = sorted({ep.name for ep in importlib.metadata.entry_points(group="nectoproxy")}
                    - {"throttle"})
    return {"entry_points": True, "disable": others, **options}
