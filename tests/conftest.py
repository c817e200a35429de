"""Fixtures shared by the engine's tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nectoproxy.testing import RunningProxy

#: The proxy's I/O set-ups (see test_io_backends.py).
MODES = ["asyncio", "uvloop", "anyio-streams"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start_proxy(make_proxy: Callable[..., RunningProxy],
                mode: str) -> Iterator[Callable[..., RunningProxy]]:
    """``start_proxy(plugins=..., config=...)``: make_proxy in this test's I/O mode."""

    def factory(plugins: Any = (), config: dict[str, dict[str, Any]] | None = None
                ) -> RunningProxy:
        return make_proxy(plugins=plugins, config=config, uvloop=mode == "uvloop",
                          anyio_streams=mode == "anyio-streams")

    yield factory
