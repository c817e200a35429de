"""Fixtures for the rules plugin's tests: a real proxy with the plugin, and a flow recorder."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from nectoproxy_plugin_rules import RulesPlugin

from nectoproxy import Flow
from nectoproxy.testing import RunningProxy


class Recorder:
    """Keeps every completed flow (with the URL the client asked for), to look at
    ``flow.metadata["rules"]`` afterwards. Registered after the rules plugin, so its
    ``on_request_headers`` runs first and sees the request untouched."""

    name = "recorder"

    def __init__(self) -> None:
        self.asked: dict[str, str] = {}  # flow id -> URL as the client sent it
        self.flows: list[Flow] = []

    def on_request_headers(self, flow: Flow) -> None:
        self.asked[flow.id] = flow.request.url

    def on_complete(self, flow: Flow) -> None:
        self.flows.append(flow)

    def rules_of(self, fragment: str, timeout: float = 5.0) -> list[str] | None:
        """``metadata["rules"]`` of the last flow whose requested URL contains ``fragment``
        (``on_complete`` may run just after the client has its answer: wait for it, bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            for flow in reversed(self.flows):
                if fragment in self.asked.get(flow.id, ""):
                    return flow.metadata.get("rules")
            if time.monotonic() > deadline:
                raise AssertionError(f"no flow for {fragment!r} in {list(self.asked.values())}")
            time.sleep(0.01)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def rules_proxy(make_proxy: Callable[..., RunningProxy], recorder: Recorder
                ) -> Callable[..., RunningProxy]:
    """``rules_proxy([rule, ...], file=..., proxy={...})``: a proxy running the plugin with
    those inline rules (and options), plus the ``recorder``."""

    def factory(rules: list[dict[str, Any]] | None = None, *, proxy: dict[str, Any] | None = None,
                **options: Any) -> RunningProxy:
        table: dict[str, Any] = dict(options)
        if rules is not None:
            table["rule"] = rules
        config: dict[str, dict[str, Any]] = {"plugins": {"rules": table}}
        if proxy:
            config["proxy"] = proxy
        return make_proxy(plugins=[RulesPlugin(), recorder], config=config)

    return factory
