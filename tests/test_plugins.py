"""The plugin framework through a real proxy: every hook, ordering, failures, scripts, reload."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time

import anyio
import anyio.lowlevel
import httpx
import pytest

import nectoproxy
from nectoproxy import ConfigError, PluginError, Response, hookimpl
from nectoproxy.plugins import PluginHost, hook_names
from nectoproxy.testing import RunningProxy, proxy_config
from nectoproxy.testing.origin import free_port


class Recorder:
    """Records every hook call it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def on_configure(self, config, options):
        self.calls.append(("on_configure", dict(options)))

    def on_start(self, config, address):
        self.calls.append(("on_start", address))

    def on_stop(self):
        self.calls.append(("on_stop", None))

    def on_connect(self, connection):
        self.calls.append(("on_connect", connection.target))

    def on_request(self, flow):
        self.calls.append(("on_request", flow.request.url))

    def on_response(self, flow):
        self.calls.append(("on_response", flow.response.status_code))

    def on_complete(self, flow):
        self.calls.append(("on_complete", flow.response_body_size))

    def on_error(self, flow, error):
        self.calls.append(("on_error", error))

    def on_cert_generated(self, hostname, certificate):
        self.calls.append(("on_cert_generated", hostname))

    def on_tunnel(self, tunnel):
        self.calls.append(("on_tunnel", (tunnel.host, tunnel.reason, tunnel.bytes_up > 0,
                                         tunnel.bytes_down > 0)))

    def on_settings(self):  # asked by the inspector only: see tests/test_live_settings.py
        self.calls.append(("on_settings", None))
        return []

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def test_every_hook_fires_through_a_real_proxy(make_proxy, origin, tls_origin, tmp_path):
    recorder = Recorder()
    recorder.name = "recorder"
    certs = tmp_path / "certs"
    config = proxy_config(certs, "", {"plugins": {"recorder": {"level": 3}}})
    config = config.replace(proxy={"upstream_ca": tls_origin.ca_pem_path})
    with RunningProxy(config, plugins=[recorder]) as proxy:
        port = proxy.port
        with proxy.client() as client:
            assert client.get(origin.url + "/bytes/10").status_code == 200
            assert client.get(f"https://localhost:{tls_origin.port}/").status_code == 200
            assert client.get(f"http://127.0.0.1:{free_port()}/").status_code == 502
    calls = recorder.calls
    assert calls[0] == ("on_configure", {"level": 3})
    assert calls[1] == ("on_start", ("127.0.0.1", port))
    assert calls[-1] == ("on_stop", None)
    assert ("on_request", origin.url + "/bytes/10") in calls
    assert ("on_response", 200) in calls
    assert ("on_complete", 10) in calls
    assert ("on_connect", None) in calls
    assert ("on_connect", ("localhost", tls_origin.port)) in calls
    assert ("on_cert_generated", "localhost") in calls
    errors = [value for name, value in calls if name == "on_error"]
    assert len(errors) == 1 and "refused" in str(errors[0])


def test_on_tunnel_fires_when_a_pass_through_tunnel_ends(make_proxy, tls_origin):
    recorder = Recorder()
    with make_proxy(plugins=[recorder], config={"proxy": {"passthrough": ["localhost"]}}) \
            as proxy:
        result = subprocess.run(
            ["curl", "-sS", "--proxy", proxy.url, "--cacert", tls_origin.ca_pem_path,
             f"https://localhost:{tls_origin.port}/"], capture_output=True, timeout=30,
            check=False)
    assert result.returncode == 0, result.stderr
    assert ("on_tunnel", ("localhost", "passthrough", True, True)) in recorder.calls
    assert "on_request" not in recorder.names()


def test_every_hookspec_is_tested_here():
    with open(__file__) as fh:
        source = fh.read()
    for name in hook_names():
        assert f"def {name}(" in source, name


def test_on_request_can_change_everything(make_proxy, origin):
    class Rewrite:
        def on_request(self, flow):
            flow.request.method = "PUT"
            flow.request.headers["X-Added"] = "1"
            flow.request.query["q"] = "two words"
            flow.request.path = flow.request.path.replace("/nowhere", "/echo")
            flow.request.text = "new body"

    with make_proxy(plugins=[Rewrite()]) as proxy, proxy.client() as client:
        echo = client.post(origin.url + "/nowhere?a=1", content=b"old").json()
    assert echo["method"] == "PUT"
    assert echo["path"] == "/echo?a=1&q=two+words"
    assert ["X-Added", "1"] in echo["headers"]
    assert echo["body"] == "new body"
    assert ["Content-Length", "8"] in echo["headers"]


def test_on_request_can_redirect_to_another_origin(make_proxy, origin):
    class Redirect:
        def on_request(self, flow):
            flow.request.url = origin.url + "/json"

    with make_proxy(plugins=[Redirect()]) as proxy, proxy.client() as client:
        response = client.get(f"http://127.0.0.1:{free_port()}/elsewhere")
    assert response.json() == {"hello": "world", "n": 1}
    assert origin.requests[-1].header("host") == f"127.0.0.1:{origin.port}"


def test_response_made_in_on_request_skips_origin_but_not_on_response(make_proxy, origin):
    seen = []

    class Answer:
        async def on_request(self, flow):
            flow.response = Response.make(200, {"mocked": True})

        def on_response(self, flow):
            seen.append(flow.response.status_code)
            flow.response.headers["X-Seen"] = "yes"

    with make_proxy(plugins=[Answer()]) as proxy, proxy.client() as client:
        response = client.get(origin.url + "/json")
        https = client.get("https://api.example.test/anything")  # never resolved
    assert response.json() == {"mocked": True} and response.headers["x-seen"] == "yes"
    assert https.json() == {"mocked": True}
    assert seen == [200, 200]
    assert origin.requests == []


def test_on_response_can_change_status_headers_and_gzip_body(make_proxy, origin):
    class Change:
        def on_response(self, flow):
            flow.response.status_code = 203
            del flow.response.headers["X-Origin"]
            flow.response.text = flow.response.text.replace("compressed", "changed")

    with make_proxy(plugins=[Change()]) as proxy, proxy.client() as client:
        response = client.get(origin.url + "/gzip-text")
    assert response.status_code == 203
    assert "x-origin" not in response.headers
    assert response.headers["content-encoding"] == "gzip"  # re-encoded, not dropped
    assert response.text == "changed hello\n" * 100


def test_kill_drops_the_connection(make_proxy, origin):
    errors = []

    class Killer:
        def on_request(self, flow):
            flow.kill()

        def on_error(self, flow, error):
            errors.append(error)

    with (make_proxy(plugins=[Killer()]) as proxy,
          socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock):
        sock.sendall(f"GET {origin.url}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(4096) == b""
    assert errors == ["killed by a plugin"]
    assert origin.requests == []


def test_on_connect_can_refuse(make_proxy, tls_origin):
    class Refuse:
        def on_connect(self, connection):
            if connection.target and connection.target[0] == "localhost":
                connection.refuse(403, "no tunnels to localhost")

    with make_proxy(plugins=[Refuse()]) as proxy:
        result = proxy.curl(f"https://localhost:{tls_origin.port}/")
    assert result.returncode != 0
    assert b"403" in result.stderr


def test_on_connect_can_pass_tls_through_untouched(make_proxy, tls_origin):
    class Passthrough:
        def on_connect(self, connection):
            if connection.target:
                connection.intercept = False

    with make_proxy(plugins=[Passthrough()]) as proxy:
        # Trusting only the ORIGIN's CA works: the client sees the origin's own certificate.
        result = proxy.curl("--cacert", tls_origin.ca_pem_path,
                            f"https://localhost:{tls_origin.port}/json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'{"hello": "world", "n": 1}'


def test_sync_and_async_plugins_run_in_order(make_proxy, origin):
    order: list[str] = []

    def plugin(label: str, is_async: bool, **opts: bool):
        if is_async:
            @hookimpl(**opts)
            async def on_request(flow):
                await anyio.sleep(0.01)
                flow.request.headers.add("X-Order", label)
                order.append(label)
        else:
            @hookimpl(**opts)
            def on_request(flow):
                flow.request.headers.add("X-Order", label)
                order.append(label)
        return type(label, (), {"on_request": staticmethod(on_request), "name": label})()

    plugins = [plugin("a", False), plugin("b", True), plugin("last", True, trylast=True),
               plugin("first", False, tryfirst=True), plugin("c", False)]
    with make_proxy(plugins=plugins) as proxy, proxy.client() as client:
        echo = client.get(origin.url + "/echo").json()
    assert order == ["first", "c", "b", "a", "last"]
    assert [v for k, v in echo["headers"] if k == "X-Order"] == order


def test_raising_plugin_is_reported_and_flow_continues(make_proxy, origin, caplog):
    class Broken:
        name = "broken"

        def on_request(self, flow):
            raise RuntimeError("boom")

    class After:
        def on_request(self, flow):
            flow.request.headers["X-After"] = "ran"

    with make_proxy(plugins=[After(), Broken()]) as proxy, proxy.client() as client:
        echo = client.get(origin.url + "/echo").json()
        assert client.get(origin.url + "/").status_code == 200
    assert ["X-After", "ran"] in echo["headers"]
    assert "plugin 'broken'" in caplog.text and "on_request" in caplog.text
    assert "RuntimeError: boom" in caplog.text and "Traceback" in caplog.text


def test_raising_plugin_can_answer_500(make_proxy, origin):
    class Broken:
        name = "broken"

        def on_response(self, flow):
            raise ValueError("bad value")

    config = {"plugins": {"on_error": "respond"}}
    with make_proxy(plugins=[Broken()], config=config) as proxy, proxy.client() as client:
        response = client.get(origin.url + "/")
    assert response.status_code == 500
    assert "plugin 'broken' failed in on_response" in response.text


def test_blocking_plugin_is_reported(make_proxy, origin, caplog):
    class Slow:
        name = "slowpoke"

        async def on_request(self, flow):
            await anyio.lowlevel.checkpoint()
            time.sleep(0.3)  # noqa: ASYNC251 - blocks the event loop on purpose

    config = {"plugins": {"slow_hook_ms": 100}}
    with make_proxy(plugins=[Slow()], config=config) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/").status_code == 200
    assert "plugin 'slowpoke' blocked the event loop" in caplog.text
    assert "on_request" in caplog.text


def test_misspelled_hook_fails_startup_naming_plugin(tmp_path):
    script = tmp_path / "typo.py"
    script.write_text("def on_requets(flow):\n    pass\n")
    host = PluginHost(proxy_config(tmp_path))
    with pytest.raises(PluginError, match=r"unknown hook 'on_requets' in plugin 'typo'.*typo.py"):
        host.load(scripts=[str(script)])


def test_hook_with_unknown_parameter_fails_startup(tmp_path):
    script = tmp_path / "badargs.py"
    script.write_text("def on_request(flow, response):\n    pass\n")
    host = PluginHost(proxy_config(tmp_path))
    with pytest.raises(PluginError, match=r"(?s)badargs.*on_request.*'response'"):
        host.load(scripts=[str(script)])


def test_script_import_error_names_file_and_line(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("x = 1\nraise ImportError('missing thing')\n")
    host = PluginHost(proxy_config(tmp_path))
    with pytest.raises(PluginError, match=r"broken.py \(line 2\): ImportError: missing thing"):
        host.load(scripts=[str(script)])


def test_plugin_table_for_unknown_plugin_is_an_error(tmp_path):
    config = proxy_config(tmp_path, "", {"plugins": {"nosuch": {"a": 1}}})
    with pytest.raises(ConfigError, match=r"\[plugins.nosuch\]"), RunningProxy(config):
        pass


def test_on_configure_rejects_bad_option(tmp_path):
    class Strict:
        name = "strict"

        def on_configure(self, options):
            if not isinstance(options.get("limit", 0), int):
                raise ConfigError("[plugins.strict] limit: expected an integer")

    config = proxy_config(tmp_path, "", {"plugins": {"strict": {"limit": "ten"}}})
    with (pytest.raises(ConfigError, match="limit: expected an integer"),
          RunningProxy(config, plugins=[Strict()])):
        pass


def test_script_via_config_and_hot_reload(make_proxy, origin, tmp_path):
    script = tmp_path / "tagger.py"
    script.write_text("def on_request(flow):\n    flow.request.headers['X-Tag'] = 'v1'\n")
    config = {"plugins": {"load": [str(script)], "reload": True}}
    with make_proxy(config=config) as proxy, proxy.client() as client:
        first = client.get(origin.url + "/echo").json()
        script.write_text("async def on_request(flow):\n    flow.request.headers['X-Tag'] = 'v2'\n")
        deadline = time.monotonic() + 10
        tags = []
        while time.monotonic() < deadline:
            echo = client.get(origin.url + "/echo").json()
            tags = [v for k, v in echo["headers"] if k == "X-Tag"]
            if tags == ["v2"]:
                break
            time.sleep(0.2)
        assert list(proxy.proxy.hooks.infos).count("tagger") == 1
    assert ["X-Tag", "v1"] in first["headers"]
    assert tags == ["v2"]  # reloaded, and the old version no longer runs


def test_broken_reload_keeps_old_version(make_proxy, origin, tmp_path, caplog):
    script = tmp_path / "keeper.py"
    script.write_text("def on_request(flow):\n    flow.request.headers['X-Keep'] = 'old'\n")
    with make_proxy(scripts=[str(script)]) as proxy, proxy.client() as client:
        script.write_text("def on_request(flow:\n")  # syntax error
        deadline = time.monotonic() + 10
        while "not reloading" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.2)
        echo = client.get(origin.url + "/echo").json()
    assert "not reloading" in caplog.text and "keeper.py" in caplog.text
    assert ["X-Keep", "old"] in echo["headers"]


def test_disable_plugins_by_name(tmp_path, monkeypatch):
    from nectoproxy.config import load_config

    monkeypatch.setenv("NECTOPROXY_DISABLE_PLUGINS", "flowlog, other")
    monkeypatch.setenv("NECTOPROXY_PLUGINS_ENTRY_POINTS", "false")
    config = load_config(use_file=False)
    assert config.plugins.disable == ("flowlog", "other")
    host = PluginHost(config)
    host.load()
    assert "flowlog" not in host.infos


def test_plugins_command_lists_scripts_and_builtins(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "lister.py"
    script.write_text("def on_response(flow):\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "nectoproxy", "plugins", "--json", "--no-config",
         "--no-entry-points", "-s", str(script)],
        capture_output=True, text=True, check=False,
        env={"NECTOPROXY_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["flowlog"]["source"] == "built-in"
    assert rows["lister"] == {"name": "lister", "version": "", "source": "script",
                              "location": str(script), "hooks": ["on_response"]}


def test_flow_log_line(proxy, origin, caplog):
    caplog.set_level(logging.INFO, logger="nectoproxy.flows")
    with proxy.client() as client:
        client.get(origin.url + "/bytes/2048")
    # on_complete runs just after the last byte is sent, so the client may be faster.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [r.message for r in caplog.records if r.name == "nectoproxy.flows"]
        if lines:
            break
        time.sleep(0.02)
    line = lines[-1]
    assert f"GET {origin.url}/bytes/2048 -> 200 2.0k" in line
    assert line.startswith("127.0.0.1:") and line.endswith("ms")


def test_public_api_exports():
    for name in ("hookimpl", "Flow", "Request", "Response", "Headers", "Proxy", "ConfigError"):
        assert hasattr(nectoproxy, name)


def test_on_request_headers_answers_without_buffering(make_proxy, origin):
    class Router:
        def on_request_headers(self, flow):
            if flow.request.pathname == "/short-circuit":
                assert flow.request.raw_content is None
                flow.response = Response.make(200, "from headers")

    with make_proxy(plugins=[Router()]) as proxy, proxy.client() as client:
        answered = client.get(origin.url + "/short-circuit")
        upload = client.post(origin.url + "/upload", content=iter([b"a" * 1000, b"b" * 1000]))
    assert answered.text == "from headers"
    assert upload.json()["length"] == 2000
    # Only on_request_headers is implemented, so the chunked upload streamed untouched.
    assert origin.requests[-1].header("transfer-encoding") == "chunked"
    assert [r.path for r in origin.requests] == ["/upload"]


def test_on_configure_false_switches_a_plugin_off(make_proxy, origin):
    class Idle:
        name = "idle"

        def on_configure(self, options):
            return bool(options)  # nothing configured -> inactive

        def on_response(self, flow):
            flow.response.headers["X-Idle"] = "ran"

    with make_proxy(plugins=[Idle()]) as proxy, proxy.client() as client:
        response = client.get(origin.url + "/")
        assert "idle" in proxy.proxy.hooks.inactive and "idle" not in proxy.proxy.hooks.infos
        assert not proxy.proxy.hooks.has("on_response")
    assert "x-idle" not in response.headers
    config = {"plugins": {"idle": {"on": True}}}
    with make_proxy(plugins=[Idle()], config=config) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/").headers["x-idle"] == "ran"


def test_on_response_headers_sets_async_chunk_filters_without_buffering(make_proxy, origin):
    import hashlib

    from nectoproxy.testing.origin import pattern_sha256

    seen: list[int] = []

    class Pace:
        def on_response_headers(self, flow):
            assert flow.response.raw_content is None  # streamed: nothing was buffered

            async def pace(chunk: bytes) -> bytes:
                seen.append(len(chunk))
                await anyio.lowlevel.checkpoint()
                return chunk

            flow.response.chunk_filters.append(pace)
            flow.response.headers["X-Paced"] = "1"

    size = 3 * 1024 * 1024
    with make_proxy(plugins=[Pace()]) as proxy, proxy.client() as client:
        response = client.get(f"{origin.url}/bytes/{size}")
    assert response.headers["x-paced"] == "1"
    assert response.headers.get("transfer-encoding") == "chunked"
    assert hashlib.sha256(response.content).hexdigest() == pattern_sha256(size)
    assert sum(seen) == size and len(seen) > 1


def test_chunk_filter_may_yield_slices_and_keep_the_length(make_proxy, origin):
    import hashlib

    from nectoproxy.testing.origin import pattern_sha256

    slices: list[int] = []

    class Slicer:
        def on_response_headers(self, flow):
            async def pace(chunk: bytes):
                for start in range(0, len(chunk), 10_000):
                    slices.append(len(chunk[start:start + 10_000]))
                    await anyio.lowlevel.checkpoint()
                    yield chunk[start:start + 10_000]

            flow.response.chunk_filters.append(pace)
            flow.response.chunk_filters.append(lambda piece: [piece[:5000], piece[5000:]])
            flow.response.filters_keep_length = True

        def on_request_headers(self, flow):
            if flow.request.pathname == "/close":
                flow.kill("simulated loss")

        def on_error(self, flow, error):
            slices.append(-1 if error == "simulated loss" else -2)

    size = 1_000_000
    with make_proxy(plugins=[Slicer()]) as proxy, proxy.client() as client:
        response = client.get(f"{origin.url}/bytes/{size}")
        with pytest.raises(httpx.HTTPError):
            client.get(origin.url + "/close")
    assert response.headers["content-length"] == str(size)
    assert hashlib.sha256(response.content).hexdigest() == pattern_sha256(size)
    assert sum(s for s in slices if s > 0) == size and max(slices) == 10_000
    assert slices[-1] == -1


def test_on_configure_may_keep_a_subset_of_hooks(make_proxy, origin):
    class Partial:
        name = "partial"

        def on_configure(self, options):
            return {"on_request_headers"} if options.get("light") else None

        def on_request_headers(self, flow):
            flow.request.headers["X-Light"] = "yes"

        def on_request(self, flow):
            flow.request.headers["X-Heavy"] = "yes"

    config = {"plugins": {"partial": {"light": True}}}
    with make_proxy(plugins=[Partial()], config=config) as proxy, proxy.client() as client:
        assert not proxy.proxy.hooks.has("on_request")  # so no body buffers for it
        echo = client.post(origin.url + "/echo", content=iter([b"a", b"b"])).json()
        assert proxy.proxy.hooks.infos["partial"].hooks == ["on_request_headers"]
    names = [k for k, _ in echo["headers"]]
    assert "X-Light" in names and "X-Heavy" not in names
    assert "Transfer-Encoding" in names  # streamed untouched


@pytest.mark.parametrize("marker", [{"hookwrapper": True}, {"wrapper": True}])
def test_pluggy_wrappers_are_refused_with_a_clear_error(tmp_path, marker):
    """pluggy would run a wrapper around the others; NectoProxy calls and awaits every hook
    itself, so a wrapper would silently be called as a plain function. Refused instead."""

    class Wrapping:
        name = "wrapping"

        @hookimpl(**marker)
        def on_request(self, flow):
            yield

    config = proxy_config(tmp_path, "")
    with pytest.raises(PluginError, match="on_request is a pluggy hook wrapper"):
        PluginHost(config).load(objects=[Wrapping()])


def test_the_websocket_hooks_sync_and_async(make_proxy):
    """on_websocket_start (async), on_websocket_message, on_websocket_end, in their order;
    more in tests/test_websocket.py."""
    import asyncio

    from test_websocket import client, echo_server

    calls = []

    class Hooks:
        async def on_websocket_start(self, flow):
            await asyncio.sleep(0)
            calls.append(("start", flow.websocket.subprotocol))

        def on_websocket_message(self, flow, message):
            calls.append(("message", message.direction, message.text))
            if message.from_client:
                message.text = message.text.upper()

        def on_websocket_end(self, flow):
            calls.append(("end", flow.websocket.close_code))

    async def scenario(proxy):
        async with echo_server() as (port, closes):
            async with client(proxy, port) as ws:
                await ws.send("hi")
                assert await ws.recv() == "HI"
            for _ in range(500):  # (bounded: the end hook runs as the proxy closes)
                if closes and calls[-1][0] == "end":
                    break
                await asyncio.sleep(0.01)

    with make_proxy(plugins=[Hooks()]) as proxy:
        asyncio.run(scenario(proxy))
    assert calls == [("start", None), ("message", "client", "hi"), ("message", "server", "HI"),
                     ("end", 1000)]
