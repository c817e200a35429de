"""``flow.intercept()`` / ``flow.resume()`` through a real proxy: a paused flow waits after its
hook, and only it; it is edited, resumed, killed or timed out; its client may leave."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from wire import wait_until

from nectoproxy.flow import Flow
from nectoproxy.testing import RunningProxy


class Pauser:
    """Pauses every flow whose path contains ``pause`` in the hook named ``hook``."""

    def __init__(self, hook: str) -> None:
        self.paused: list[Flow] = []
        self.errors: list[str] = []
        setattr(self, hook, self._maybe_pause)

    def _maybe_pause(self, flow: Flow) -> None:
        if "pause" in flow.request.path:
            flow.intercept()
            self.paused.append(flow)

    def on_error(self, flow: Flow, error: str) -> None:
        self.errors.append(error)


class Background:
    """One request sent from another thread; ``result()`` waits for its answer."""

    def __init__(self, proxy: RunningProxy, url: str, **kwargs: Any) -> None:
        self.answer: httpx.Response | BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(proxy, url, kwargs))
        self._thread.start()

    def _run(self, proxy: RunningProxy, url: str, kwargs: dict[str, Any]) -> None:
        try:
            with proxy.client() as client:
                self.answer = client.request(kwargs.pop("method", "GET"), url, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.answer = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> httpx.Response:
        self._thread.join(30)
        assert isinstance(self.answer, httpx.Response), self.answer
        return self.answer


def on_loop(proxy: RunningProxy, fn: Callable[[], None]) -> None:
    """Run ``fn`` on the proxy's event loop (where flows are resumed from)."""
    proxy.portal.call(fn)


def test_a_flow_paused_on_request_waits_alone_then_goes_edited(start_proxy, origin):
    pauser = Pauser("on_request")
    with start_proxy(plugins=[pauser]) as proxy:
        first = Background(proxy, origin.url + "/echo?pause=1", method="POST", content=b"one")
        second = Background(proxy, origin.url + "/echo?pause=2")
        assert wait_until(lambda: len(pauser.paused) == 2)
        with proxy.client() as client:  # a third flow, not paused, goes through meanwhile
            assert client.get(origin.url + "/json").json()["hello"] == "world"
        assert [r.path for r in origin.requests] == ["/json"]
        assert not first.done() and not second.done()

        by_path = {flow.request.path: flow for flow in pauser.paused}

        def edit() -> None:
            flow = by_path["/echo?pause=1"]
            flow.request.headers["X-Edited"] = "yes"
            flow.request.text = "edited body"
            flow.resume()

        on_loop(proxy, edit)
        echo = first.result().json()
        assert ["X-Edited", "yes"] in echo["headers"] and echo["body"] == "edited body"
        assert not second.done()  # still paused: resuming one flow resumes that one only
        on_loop(proxy, by_path["/echo?pause=2"].resume)
        assert second.result().status_code == 200
    assert pauser.errors == []


def test_a_flow_paused_on_response_is_edited_before_the_client_sees_it(make_proxy, origin):
    pauser = Pauser("on_response")
    with make_proxy(plugins=[pauser]) as proxy:
        pending = Background(proxy, origin.url + "/echo?pause")
        assert wait_until(lambda: len(pauser.paused) == 1)
        assert len(origin.requests) == 1  # the origin answered; the client waits

        def edit() -> None:
            flow = pauser.paused[0]
            assert flow.response is not None
            flow.response.status_code = 418
            flow.response.headers["X-Edited"] = "response"
            flow.response.text = "changed while paused"
            flow.resume()

        on_loop(proxy, edit)
        answer = pending.result()
    assert answer.status_code == 418
    assert answer.headers["x-edited"] == "response"
    assert answer.text == "changed while paused"


def test_paused_in_the_head_hooks_a_flow_waits_with_its_body_buffered(make_proxy, origin):
    """The head hooks buffer nothing for flows that are not paused; a paused one is held once
    its body is in, so the body can be edited."""
    class HeadPauser:
        def __init__(self) -> None:
            self.paused: list[Flow] = []

        def on_request_headers(self, flow: Flow) -> None:
            if "pause" in flow.request.path:
                flow.intercept()
                self.paused.append(flow)

        def on_response_headers(self, flow: Flow) -> None:
            self.on_request_headers(flow)

    pauser = HeadPauser()
    with make_proxy(plugins=[pauser]) as proxy:
        pending = Background(proxy, origin.url + "/echo?pause", method="POST",
                             content=b"as sent")
        assert wait_until(lambda: len(pauser.paused) == 1)
        flow = pauser.paused[0]
        assert flow.request.raw_content == b"as sent"

        def edit_request() -> None:
            flow.request.content = b"edited request"
            flow.resume()

        on_loop(proxy, edit_request)
        assert wait_until(lambda: len(pauser.paused) == 2)  # again, with the response
        assert flow.response is not None and b"edited request" in flow.response.content

        def edit_response() -> None:
            assert flow.response is not None
            flow.response.text = "edited response"
            flow.resume()

        on_loop(proxy, edit_response)
        assert pending.result().text == "edited response"
        assert origin.requests[-1].body == b"edited request"


@pytest.mark.parametrize("hook", ["on_request_headers", "on_response_headers"])
def test_a_paused_flow_killed_closes_its_connection(make_proxy, origin, hook):
    pauser = Pauser(hook)
    with (make_proxy(plugins=[pauser]) as proxy,
          socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock):
        sock.sendall(f"GET {origin.url}/echo?pause HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert wait_until(lambda: len(pauser.paused) == 1)
        on_loop(proxy, lambda: pauser.paused[0].kill("aborted while paused"))
        assert sock.recv(4096) == b""
        assert wait_until(lambda: pauser.errors == ["aborted while paused"])


def test_a_paused_flow_continues_after_the_timeout_logged(make_proxy, origin, caplog):
    caplog.set_level(logging.WARNING, "nectoproxy.http")
    pauser = Pauser("on_request")
    config = {"proxy": {"intercept_timeout": 0.3}}
    with make_proxy(plugins=[pauser], config=config) as proxy, proxy.client() as client:
        response = client.get(origin.url + "/echo?pause")
    assert response.status_code == 200 and len(pauser.paused) == 1
    assert not pauser.paused[0].intercepted
    assert any("intercept_timeout" in r.message and "/echo?pause" in r.message
               for r in caplog.records)


def test_a_client_that_leaves_ends_its_paused_flow(start_proxy, origin):
    pauser = Pauser("on_request")
    with start_proxy(plugins=[pauser]) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(f"GET {origin.url}/echo?pause HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert wait_until(lambda: len(pauser.paused) == 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert wait_until(lambda: len(pauser.errors) == 1)  # (reset: gone, not half-closed)
        assert "client" in pauser.errors[0]
        assert origin.requests == []
