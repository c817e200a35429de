"""Breakpoints through a real ``nectoproxy`` process: made through the API (and kept across a
restart), matching flows pause on request or response while others go through, and a person
continues them edited, aborts them or answers with a mock; unattended ones time out; with
several worker processes, the same for a flow paused in any of them (and one whose worker
process stops is gone)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from test_live_settings import Running, config_text, nectoproxy, wait_for
from test_web_support import WsClient

NO_PLUGINS = config_text(rules=False, throttle=False)
Sent = TypeVar("Sent")


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


# -- several worker processes -----------------------------------------------------------------

TWO_WORKERS = config_text(workers=2, rules=False, throttle=False)
#: From the API call to the client's answer, whichever process holds the flow.
RESUMED_WITHIN = 0.5


def process_of(flow_id: str) -> str:
    """Which process took a flow: a flow id starts with a prefix random per process."""
    return flow_id[:16]


def path_of(flow: dict[str, Any]) -> str:
    """A paused flow's path and query, as the origin sees them."""
    url = urlsplit(flow["request"]["url"])
    return f"{url.path}?{url.query}"


class Curl:
    """curl through the proxy in the background (it may wait at a breakpoint)."""

    def __init__(self, proxy: Running, url: str, *args: str) -> None:
        self.url = url
        self.process = subprocess.Popen(
            ["curl", "-sS", "--noproxy", "", "--proxy", f"http://127.0.0.1:{proxy.port}",
             "-w", "\\n%{http_code}", *args, url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> tuple[int, str, str]:
        """(curl's exit code, the body, the status) once it ended."""
        out, err = self.process.communicate(timeout=30)
        body, _, status = out.rpartition("\n")
        return self.process.returncode, body, status or err


class Leaving:
    """A request on a socket of its own, whose client leaves (a reset) when told to."""

    def __init__(self, proxy: Running, url: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        self.sock.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    def leave(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def pause_in_both(api: httpx.Client, url: str, each: int, send: Callable[[str], Sent]
                  ) -> dict[str, tuple[dict[str, Any], Sent]]:
    """``send`` requests that pause (each on a new connection: the kernel spreads them over
    the processes) until each process holds ``each`` of them: {flow id: (paused flow, what
    ``send`` gave)}."""
    sent: dict[str, Sent] = {}
    for n in range(60):
        sent[f"{url}?n={n}"] = send(f"{url}?n={n}")
        listed = paused(api, n + 1)
        held = [process_of(p["id"]) for p in listed]
        if len(set(held)) == 2 and min(held.count(h) for h in held) >= each:
            return {p["id"]: (p, sent[p["request"]["url"]]) for p in listed}
    raise AssertionError("the flows never reached both processes")


class Events:
    """The event socket's breakpoint messages, read as they come."""

    def __init__(self, feed: WsClient) -> None:
        self.feed = feed
        self.got: list[dict[str, Any]] = []

    def until(self, done: Any) -> list[dict[str, Any]]:
        """Read until ``done(the breakpoint messages so far)``; those messages."""
        while not done(self.got):
            self.got += [m for m in self.feed.messages_until(
                lambda m: m["type"].startswith("breakpoint:"))
                if m["type"].startswith("breakpoint:")]
        return self.got

    def resumed(self, ids: Any) -> dict[str, str]:
        """Wait until every one of ``ids`` was announced resumed: {id: action}."""
        wanted = set(ids)
        found = self.until(lambda got: wanted <= {m.get("id") for m in got
                                                  if m["type"] == "breakpoint:resumed"})
        return {m["id"]: m["action"] for m in found
                if m["type"] == "breakpoint:resumed" and m["id"] in wanted}


def test_with_two_workers_flows_paused_in_either_process_are_edited_aborted_and_mocked(
        tmp_path: Path, origin: Any) -> None:
    with nectoproxy(tmp_path, TWO_WORKERS, workers=2) as proxy, proxy.api() as api, \
            WsClient(proxy.web_port, f"/api/events?token={proxy.token}") as feed:
        events = Events(feed)
        feed.messages_until(lambda m: m["type"] == "sessions")
        assert api.post("/api/breakpoints", json={"filter": "path:/echo",
                                                  "phase": "request"}).status_code == 201
        held = pause_in_both(api, origin.url + "/echo", 3,
                             lambda url: Curl(proxy, url, "-d", "as sent"))
        hits = events.until(lambda got: len([m for m in got if m["type"] == "breakpoint:hit"])
                            == len(held))
        assert {m["flow"]["id"] for m in hits} == set(held)
        assert proxy.get(origin.url + "/json").status_code == 200  # not paused
        by_process: dict[str, list[str]] = {}
        for flow_id in held:
            by_process.setdefault(process_of(flow_id), []).append(flow_id)
        assert len(by_process) == 2

        def resume(flow_id: str, action: str, **changes: Any) -> httpx.Response:
            return api.post(f"/api/breakpoints/paused/{flow_id}/resume",
                            json={"action": action, "modifications": changes})

        actions: dict[str, str] = {}
        edits: list[str] = []
        for ids in by_process.values():
            edited, aborted, mocked, *rest = ids
            edits.append(edited)
            flow = held[edited][0]
            assert flow["request"]["body"] == "as sent"
            assert api.get(f"/api/breakpoints/paused/{edited}").json() == flow
            refused = resume(edited, "continue", status=500)
            assert refused.status_code == 400, refused.text
            assert refused.json()["field"] == "modifications.status"
            assert edited in {p["id"] for p in paused(api, len(held) - len(actions))}
            started = time.monotonic()
            answer = resume(edited, "continue", method="PUT", url=origin.url + f"/echo?{edited}",
                            headers=[*flow["request"]["headers"], ["X-Edited", "yes"]],
                            body="edited body")
            assert answer.status_code == 200, answer.text
            assert answer.json()["request"]["method"] == "PUT"
            code, body, status = held[edited][1].result()
            assert time.monotonic() - started < RESUMED_WITHIN  # (no polling on either side)
            echo = json.loads(body)
            assert (code, status, echo["method"], echo["body"]) == (0, "200", "PUT",
                                                                    "edited body")
            assert echo["path"] == f"/echo?{edited}" and ["X-Edited", "yes"] in echo["headers"]

            assert resume(aborted, "abort").status_code == 200
            code, _, error = held[aborted][1].result()
            assert code == 52, error  # curl: an empty reply, the connection was closed

            assert resume(mocked, "mock", status=201, body="from the breakpoint").is_success
            assert held[mocked][1].result() == (0, "from the breakpoint", "201")

            for other in rest:
                assert resume(other, "continue").status_code == 200
                assert held[other][1].result()[::2] == (0, "200")
            actions |= {edited: "continue", aborted: "abort", mocked: "mock"}
            actions |= dict.fromkeys(rest, "continue")
        assert events.resumed(held) == actions
        assert api.get("/api/breakpoints/paused").json()["paused"] == []
        assert resume(edited, "continue").status_code == 404
        # The edited ones reached the origin as edited, the others continued as sent; the
        # aborted, mocked and abandoned ones never did.
        sent = [f"/echo?{i}" if i in edits else path_of(held[i][0])
                for i, action in actions.items() if action == "continue"]
        assert sorted(r.path for r in origin.requests) == sorted([*sent, "/json"])
        stored = wait_for(lambda: (got := api.get(f"/api/traffic/{edited}")).status_code == 200
                          and got.json().get("status") and got.json())
        assert stored["modifiedBy"] == ["breakpoints"]  # recorded by the worker that held it


def test_with_two_workers_flows_whose_client_left_or_nobody_resumed_go_on(
        tmp_path: Path, origin: Any) -> None:
    config = TWO_WORKERS.replace("[proxy]\n", "[proxy]\nintercept_timeout = 5\n")
    with nectoproxy(tmp_path, config, workers=2) as proxy, proxy.api() as api, \
            WsClient(proxy.web_port, f"/api/events?token={proxy.token}") as feed:
        events = Events(feed)
        feed.messages_until(lambda m: m["type"] == "sessions")
        api.post("/api/breakpoints", json={"filter": "path:/json", "phase": "request"})
        left = pause_in_both(api, origin.url + "/json", 1, lambda url: Leaving(proxy, url))
        for _, client in left.values():
            client.leave()
        assert events.resumed(left) == dict.fromkeys(left, "gone")
        assert api.get("/api/breakpoints/paused").json()["paused"] == []

        unattended = pause_in_both(api, origin.url + "/json", 1, lambda url: Curl(proxy, url))
        for _, curl in unattended.values():
            assert curl.result()[::2] == (0, "200")  # (after the 5 s)
        assert events.resumed(unattended) == dict.fromkeys(unattended, "timeout")
        assert api.get("/api/breakpoints/paused").json()["paused"] == []
        assert sorted(r.path for r in origin.requests) == sorted(
            path_of(p) for p, _ in unattended.values())  # (the ones that left never went)


def worker_pid(proxy: Running) -> int:
    """The worker process: the primary's child that listens on the proxy's port too."""
    inodes = {f"socket:[{line.split()[9]}]"
              for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
              if line.split()[1].endswith(f":{proxy.port:04X}") and line.split()[3] == "0A"}
    pid = proxy.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in map(int, children):
        fds = Path(f"/proc/{child}/fd")
        if any(os.readlink(fd) in inodes for fd in fds.iterdir()):
            return child
    raise AssertionError(f"no child of {pid} listens on {proxy.port}")


def test_a_worker_that_stops_takes_its_paused_flows_with_it(tmp_path: Path,
                                                            origin: Any) -> None:
    with nectoproxy(tmp_path, TWO_WORKERS, workers=2) as proxy, proxy.api() as api, \
            WsClient(proxy.web_port, f"/api/events?token={proxy.token}") as feed:
        events = Events(feed)
        feed.messages_until(lambda m: m["type"] == "sessions")
        api.post("/api/breakpoints", json={"filter": "path:/json", "phase": "request"})
        held = pause_in_both(api, origin.url + "/json", 1, lambda url: Curl(proxy, url))
        os.kill(worker_pid(proxy), signal.SIGKILL)
        first = next(m for m in events.until(lambda got: any(
            m["type"] == "breakpoint:resumed" for m in got)) if m["type"] == "breakpoint:resumed")
        lost = {i for i in held if process_of(i) == process_of(first["id"])}
        assert events.resumed(lost) == dict.fromkeys(lost, "gone")
        kept = set(held) - lost
        assert {p["id"] for p in paused(api, len(kept))} == kept
        for flow_id in lost:
            assert held[flow_id][1].result()[0] != 0  # its connection went with the process
            assert api.post(f"/api/breakpoints/paused/{flow_id}/resume",
                            json={"action": "continue"}).status_code == 404
        for flow_id in kept:  # the first process's go on as usual
            assert api.post(f"/api/breakpoints/paused/{flow_id}/resume",
                            json={"action": "continue"}).status_code == 200
            assert held[flow_id][1].result()[::2] == (0, "200")
