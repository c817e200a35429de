"""Breakpoints through a real ``nectoproxy`` process: made through the API (and kept across a
restart), matching flows pause on request or response while others go through, and a person
continues them edited, aborts them or answers with a mock; unattended ones time out; with
several worker processes they are refused."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
from test_live_settings import Running, config_text, nectoproxy, wait_for
from test_web_support import WsClient

NO_PLUGINS = config_text(rules=False, throttle=False)


class Through:
    """A request through the proxy from another thread (it may wait at a breakpoint)."""

    def __init__(self, proxy: Running, url: str, method: str = "GET",
                 body: bytes | None = None) -> None:
        self.answer: httpx.Response | BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(proxy, method, url, body))
        self._thread.start()

    def _run(self, proxy: Running, method: str, url: str, body: bytes | None) -> None:
        try:
            with httpx.Client(proxy=f"http://127.0.0.1:{proxy.port}", trust_env=False,
                              timeout=30) as client:
                self.answer = client.request(method, url, content=body)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.answer = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> httpx.Response | BaseException:
        self._thread.join(30)
        assert self.answer is not None
        return self.answer


def paused(api: httpx.Client, count: int) -> list[dict[str, Any]]:
    found = wait_for(lambda: len(got := api.get("/api/breakpoints/paused").json()["paused"])
                     == count and got)
    assert found, api.get("/api/breakpoints/paused").json()
    return list(found)


def test_breakpoints_are_made_changed_deleted_and_kept_across_a_restart(tmp_path: Path
                                                                        ) -> None:
    with nectoproxy(tmp_path, NO_PLUGINS) as proxy, proxy.api() as api:
        assert api.get("/api/breakpoints").json()["breakpoints"] == []
        made = api.post("/api/breakpoints", json={"filter": "host:a.test", "phase": "request"})
        assert made.status_code == 201, made.text
        first = made.json()
        assert first["filter"] == "host:a.test" and first["enabled"] is True and first["id"]
        second = api.post("/api/breakpoints", json={"filter": "status:5xx",
                                                    "phase": "response", "name": "errors"})
        ident = second.json()["id"]
        patched = api.patch(f"/api/breakpoints/{ident}", json={"enabled": False}).json()
        assert patched == {"id": ident, "name": "errors", "filter": "status:5xx",
                           "phase": "response", "enabled": False}
        replaced = api.put(f"/api/breakpoints/{first['id']}",
                           json={"filter": "method:POST", "phase": "both"}).json()
        assert replaced["id"] == first["id"] and replaced["filter"] == "method:POST"
        bad = api.post("/api/breakpoints", json={"filter": "status:abc"})
        assert bad.status_code == 400 and bad.json()["field"] == "breakpoints[2].filter"
        assert api.post("/api/breakpoints", json={"filter": "", "phase": "sometimes"}
                        ).status_code == 400
        assert api.delete(f"/api/breakpoints/{first['id']}").json() == {"deleted": first["id"]}
        assert api.get(f"/api/breakpoints/{first['id']}").status_code == 404
    assert (tmp_path / "breakpoints.toml").exists()
    with nectoproxy(tmp_path, NO_PLUGINS) as proxy, proxy.api() as api:
        assert api.get("/api/breakpoints").json()["breakpoints"] == [patched]
        paths = api.get("/api/openapi.json").json()["paths"]
        assert {"get", "post"} <= set(paths["/api/breakpoints"])
        assert {"put", "patch", "delete"} <= set(paths["/api/breakpoints/{id}"])
        assert "post" in paths["/api/breakpoints/paused/{id}/resume"]


def test_two_flows_paused_on_request_while_a_third_completes_then_edited_and_aborted(
        tmp_path: Path, origin: Any) -> None:
    with nectoproxy(tmp_path, NO_PLUGINS) as proxy, proxy.api() as api, \
            WsClient(proxy.web_port, f"/api/events?token={proxy.token}") as events:
        events.messages_until(lambda m: m["type"] == "sessions")
        api.post("/api/breakpoints", json={"filter": "path:/echo", "phase": "request"})
        edited = Through(proxy, origin.url + "/echo?one", "POST", b"as sent")
        aborted = Through(proxy, origin.url + "/echo?two")
        both = {p["request"]["url"]: p for p in paused(api, 2)}
        hit = events.messages_until(lambda m: m["type"] == "breakpoint:hit")[-1]
        assert hit["flow"]["phase"] == "request"
        assert proxy.get(origin.url + "/json").json()["hello"] == "world"  # not paused
        assert [r.path for r in origin.requests] == ["/json"]
        first = both[origin.url + "/echo?one"]
        assert first["request"]["body"] == "as sent" and first["response"] is None

        resumed = api.post(f"/api/breakpoints/paused/{first['id']}/resume", json={
            "action": "continue", "modifications": {
                "method": "PUT", "url": origin.url + "/echo?edited",
                "headers": [*first["request"]["headers"], ["X-Edited", "yes"]],
                "body": "edited body"}})
        assert resumed.status_code == 200, resumed.text
        answer = edited.result()
        assert isinstance(answer, httpx.Response)
        echo = answer.json()
        assert echo["method"] == "PUT" and echo["path"] == "/echo?edited"
        assert ["X-Edited", "yes"] in echo["headers"] and echo["body"] == "edited body"
        assert not aborted.done()  # resuming one resumed that one only

        second = both[origin.url + "/echo?two"]
        refused = api.post(f"/api/breakpoints/paused/{second['id']}/resume",
                           json={"action": "continue", "modifications": {"status": 500}})
        assert refused.status_code == 400 and refused.json()["field"] == "modifications.status"
        api.post(f"/api/breakpoints/paused/{second['id']}/resume", json={"action": "abort"})
        assert isinstance(aborted.result(), httpx.HTTPError)  # the connection was closed
        assert [r.path for r in origin.requests] == ["/json", "/echo?edited"]
        stored = wait_for(lambda: (got := api.get(f"/api/traffic/{first['id']}")).status_code
                          == 200 and got.json().get("status") and got.json())
        assert stored["modifiedBy"] == ["breakpoints"]  # the flow store says who changed it
        assert api.get("/api/breakpoints/paused").json()["paused"] == []
        assert api.post(f"/api/breakpoints/paused/{second['id']}/resume",
                        json={"action": "continue"}).status_code == 404
        got = events.messages_until(lambda m: m.get("type") == "breakpoint:resumed"
                                    and m["action"] == "abort")
        assert {"type": "breakpoint:resumed", "id": first["id"], "action": "continue",
                "phase": "request"} in got


def test_paused_on_response_edited_and_mocked_on_request(tmp_path: Path, origin: Any) -> None:
    with nectoproxy(tmp_path, NO_PLUGINS) as proxy, proxy.api() as api:
        api.post("/api/breakpoints", json={"filter": "path:/json", "phase": "response"})
        api.post("/api/breakpoints", json={"filter": "path:/mocked", "phase": "both"})
        pending = Through(proxy, origin.url + "/json")
        [flow] = paused(api, 1)
        assert flow["phase"] == "response" and flow["response"]["status"] == 200
        assert '"hello"' in flow["response"]["body"]
        api.post(f"/api/breakpoints/paused/{flow['id']}/resume", json={
            "action": "continue",
            "modifications": {"status": 299, "body": "{\"edited\": true}"}})
        answer = pending.result()
        assert isinstance(answer, httpx.Response)
        assert answer.status_code == 299 and answer.json() == {"edited": True}

        mocked = Through(proxy, origin.url + "/mocked")
        [flow] = paused(api, 1)
        assert flow["phase"] == "request"
        api.post(f"/api/breakpoints/paused/{flow['id']}/resume", json={
            "action": "mock", "modifications": {"status": 201, "body": "from the breakpoint",
                                                "headers": [["X-Mock", "1"]]}})
        answer = mocked.result()
        assert isinstance(answer, httpx.Response)
        assert (answer.status_code, answer.text) == (201, "from the breakpoint")
        assert answer.headers["x-mock"] == "1"
        assert [r.path for r in origin.requests] == ["/json"]  # the mock never reached it
        assert api.get("/api/breakpoints/paused").json()["paused"] == []  # not again


def test_an_unattended_flow_continues_after_the_timeout(tmp_path: Path, origin: Any) -> None:
    config = NO_PLUGINS.replace("[proxy]\n", "[proxy]\nintercept_timeout = 1\n")
    with nectoproxy(tmp_path, config) as proxy, proxy.api() as api, \
            WsClient(proxy.web_port, f"/api/events?token={proxy.token}") as events:
        api.post("/api/breakpoints", json={"filter": "path:/json"})  # (phase: both)
        pending = Through(proxy, origin.url + "/json")
        [flow] = paused(api, 1)
        answer = pending.result()  # after a second at its request, a second at its response
        assert isinstance(answer, httpx.Response) and answer.status_code == 200
        got = events.messages_until(lambda m: m.get("type") == "breakpoint:resumed"
                                    and m["phase"] == "response")
        resumed = [m for m in got if m["type"] == "breakpoint:resumed"]
        assert resumed == [{"type": "breakpoint:resumed", "id": flow["id"],
                            "action": "timeout", "phase": phase}
                           for phase in ("request", "response")]
        assert api.get("/api/breakpoints/paused").json()["paused"] == []


def test_with_several_workers_breakpoints_are_refused(tmp_path: Path, origin: Any) -> None:
    (tmp_path / "breakpoints.toml").write_text(
        '[[breakpoint]]\nid = "by-hand"\nfilter = "path:/json"\nphase = "request"\n')
    config = config_text(workers=2, rules=False, throttle=False)
    with nectoproxy(tmp_path, config, workers=2) as proxy, proxy.api() as api:
        assert any("proxy.workers = 1" in line for line in proxy.stderr_lines)
        for _ in range(6):  # new connections: both processes serve some, neither pauses
            assert proxy.get(origin.url + "/json").status_code == 200
        assert api.get("/api/breakpoints/paused").json()["paused"] == []
        refused = api.post("/api/breakpoints", json={"filter": "host:a.test"})
        assert refused.status_code == 400
        assert "proxy.workers = 1" in refused.json()["error"]
        # switched off, breakpoints are kept (for a run with one process)
        assert api.patch("/api/breakpoints/by-hand", json={"enabled": False}).status_code == 200
        disabled = api.post("/api/breakpoints", json={"filter": "host:a.test",
                                                      "enabled": False})
        assert disabled.status_code == 201
