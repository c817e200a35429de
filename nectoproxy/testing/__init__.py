"""pytest fixtures for testing NectoProxy plugins (installed as a pytest plugin, ``pytest11``).

A plugin's test is a few lines::

    def test_adds_header(make_proxy, origin):
        with make_proxy(plugins=[MyPlugin()]) as proxy:
            response = proxy.client().get(origin.url + "/echo")
        assert response.json()["headers"] ...

``make_proxy`` starts a real proxy on 127.0.0.1 (free port) in a background thread, with its
own CA in a temporary directory and trusting the test origins' CA upstream. ``proxy.client()``
is an ``httpx.Client`` that goes through it and trusts its CA; ``proxy.curl(...)`` runs curl
the same way. ``origin`` / ``tls_origin`` are local fake web servers (see
:mod:`nectoproxy.testing.origin`).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.from_thread
import pytest

from nectoproxy.config import Config, config_from_dict
from nectoproxy.proxy.server import Proxy
from nectoproxy.testing.origin import Origin


def proxy_config(certs_dir: Path, upstream_ca: str = "",
                 sections: dict[str, dict[str, Any]] | None = None) -> Config:
    """A test configuration: 127.0.0.1, a free port, the given certs dir, no config file,
    no entry-point plugins; ``sections`` ({"proxy": {...}, "plugins": {...}}) is merged in."""
    data: dict[str, Any] = {
        "proxy": {"listen_host": "127.0.0.1", "listen_port": 0, "upstream_ca": upstream_ca},
        "certs": {"dir": str(certs_dir)},
        "plugins": {"entry_points": False},
    }
    for name, values in (sections or {}).items():
        data.setdefault(name, {}).update(values)
    return config_from_dict(data)


class RunningProxy:
    """A proxy running in a background thread; a context manager."""

    def __init__(self, config: Config, plugins: Sequence[object] = (),
                 scripts: Sequence[str] = (), *, uvloop: bool = False,
                 anyio_streams: bool = False) -> None:
        self.config = config
        self.proxy = Proxy(config, plugins=plugins, scripts=scripts, grace=1.0,
                           anyio_streams=anyio_streams)
        self.uvloop = uvloop
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        try:
            options = {"use_uvloop": True} if self.uvloop else None
            portal = self._stack.enter_context(
                anyio.from_thread.start_blocking_portal(backend_options=options))
            self.portal = portal
            self._stack.enter_context(portal.wrap_async_context_manager(self.proxy))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()

    @property
    def port(self) -> int:
        return self.proxy.address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.config.certs_dir / "ca.pem"

    def client(self, **kwargs: Any) -> Any:
        """An ``httpx.Client`` that uses this proxy and trusts its CA (close it, or use
        ``with``)."""
        import ssl

        import httpx

        kwargs.setdefault("verify", ssl.create_default_context(cafile=str(self.ca_path)))
        kwargs.setdefault("timeout", 30)
        return httpx.Client(proxy=self.url, **kwargs)

    def curl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        """Run curl through this proxy, trusting its CA (strict verification, no ``-k``)."""
        return subprocess.run(
            ["curl", "-sS", "--proxy", self.url, "--cacert", str(self.ca_path), *args],
            capture_output=True, timeout=timeout, check=False,
        )


@pytest.fixture(scope="session", autouse=True)
def nectoproxy_test_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A ``nectoproxy`` command a test starts (with the test's environment) keeps out of the
    user's ``~/.nectoproxy`` and leaves port 8889 alone: ``NECTOPROXY_HOME`` points into the
    session's temporary directory and the inspector picks a free port, unless the environment
    already says otherwise."""
    import os

    defaults = {"NECTOPROXY_HOME": str(tmp_path_factory.mktemp("nectoproxy-home")),
                "NECTOPROXY_WEB_PORT": "0"}
    added = [name for name in defaults if name not in os.environ]
    for name in added:
        os.environ[name] = defaults[name]
    yield
    for name in added:
        os.environ.pop(name, None)


@pytest.fixture(scope="session")
def origin_ca() -> Any:
    """The trustme CA that signs every test origin's certificate."""
    trustme = pytest.importorskip("trustme", reason="install trustme to test TLS origins")
    return trustme.CA()


@pytest.fixture(scope="session")
def origin_ca_path(origin_ca: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("origin-ca") / "origin-ca.pem"
    origin_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def origin() -> Iterator[Origin]:
    """A plain-HTTP fake origin on 127.0.0.1."""
    with Origin() as server:
        yield server


@pytest.fixture
def tls_origin(origin_ca: Any) -> Iterator[Origin]:
    """An HTTPS fake origin on 127.0.0.1 whose certificate the test proxies trust."""
    with Origin(tls=True, ca=origin_ca) as server:
        yield server


@pytest.fixture(scope="session")
def shared_certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One NectoProxy CA for the whole session (making an RSA CA per test is slow)."""
    return tmp_path_factory.mktemp("nectoproxy-certs")


@pytest.fixture
def make_proxy(shared_certs_dir: Path, origin_ca_path: str) -> Callable[..., RunningProxy]:
    """Factory: ``make_proxy(plugins=[obj], scripts=["x.py"], config={"proxy": {...}})``;
    ``uvloop=True`` runs the proxy on uvloop (as the ``nectoproxy`` command does when it is
    installed) instead of asyncio's own loop; ``anyio_streams=True`` makes it use anyio's
    streams (what other anyio backends get) instead of the loop's transports.

    ``config`` tables are merged into the test configuration (``{"plugins": {"myplugin":
    {...}}}`` configures a plugin). Use the result as a context manager.
    """

    def factory(plugins: Sequence[object] = (), scripts: Sequence[str] = (),
                config: dict[str, dict[str, Any]] | None = None,
                uvloop: bool = False, anyio_streams: bool = False) -> RunningProxy:
        config_ = proxy_config(shared_certs_dir, origin_ca_path, config)
        return RunningProxy(config_, plugins=plugins, scripts=scripts, uvloop=uvloop,
                            anyio_streams=anyio_streams)

    return factory


@pytest.fixture
def proxy(make_proxy: Callable[..., RunningProxy]) -> Iterator[RunningProxy]:
    """A running proxy with no plugins."""
    with make_proxy() as running:
        yield running


@pytest.fixture
def proxy_client(proxy: RunningProxy) -> Iterator[Any]:
    """An httpx.Client through the ``proxy`` fixture."""
    with proxy.client() as client:
        yield client


__all__ = ["Origin", "RunningProxy", "proxy_config"]
