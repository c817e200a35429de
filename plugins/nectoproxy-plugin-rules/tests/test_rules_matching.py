"""Every matcher, through a real proxy: each rule answers with its own name when it matches,
everything else reaches the fake origin."""

from __future__ import annotations

from typing import Any


def mark(name: str, **matchers: Any) -> dict[str, Any]:
    """A rule that answers with its own name."""
    return {"name": name, **matchers, "mock": {"body": name}}


def test_url_glob_and_regex(rules_proxy, origin, recorder):
    rules = [mark("glob", url=f"{origin.url}/api/*"),
             mark("regex", url=r"/\/v[0-9]+\/items\?id=\d+$/")]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/api/users/7?full=1").text == "glob"
        assert client.get(origin.url + "/v2/items?id=42").text == "regex"
        assert client.get(origin.url + "/v2/items?id=x").status_code == 404  # the origin's
        assert client.get(origin.url + "/json").json()["hello"] == "world"
    assert [r.path for r in origin.requests] == ["/v2/items?id=x", "/json"]
    assert recorder.rules_of("/api/users") == ["glob"]
    assert recorder.rules_of("id=42") == ["regex"]
    assert recorder.rules_of("/json") is None


def test_host_glob_ignores_case(rules_proxy, origin):
    with rules_proxy([mark("host", host="*.EXAMPLE.test")]) as proxy, proxy.client() as client:
        assert client.get("http://API.example.test/anything").text == "host"
        assert client.get("http://deep.api.example.test:8080/").text == "host"
        assert client.get(origin.url + "/json").status_code == 200  # 127.0.0.1: not matched
    assert len(origin.requests) == 1


def test_path_glob_and_regex_without_the_query(rules_proxy, origin):
    rules = [mark("glob", path="/shop/*/detail"), mark("regex", path=r"/^/v\d+/"),
             mark("exact", path="/echo")]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/shop/42/detail").text == "glob"
        assert client.get(origin.url + "/shop/42/detail/more").status_code == 404
        assert client.get(origin.url + "/v3/x").text == "regex"
        assert client.get(origin.url + "/echo?with=query").text == "exact"
        assert client.get(origin.url + "/echoes").status_code == 404


def test_method_string_or_list(rules_proxy, origin):
    rules = [mark("post", path="/echo", method="POST"),
             mark("put-or-delete", path="/echo", method=["put", "DELETE"])]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        assert client.post(origin.url + "/echo", content=b"x").text == "post"
        assert client.put(origin.url + "/echo", content=b"x").text == "put-or-delete"
        assert client.delete(origin.url + "/echo").text == "put-or-delete"
        assert client.get(origin.url + "/echo").json()["method"] == "GET"
        assert client.patch(origin.url + "/echo", content=b"x").json()["method"] == "PATCH"


def test_header_patterns_and_a_missing_header(rules_proxy, origin):
    rules = [mark("staging-json", headers={"x-env": "stag*", "Accept": "/json/"})]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        hit = client.get(origin.url + "/echo",
                         headers={"X-Env": "staging", "Accept": "application/json"})
        wrong_value = client.get(origin.url + "/echo",
                                 headers={"X-Env": "production", "Accept": "application/json"})
        missing = client.get(origin.url + "/echo", headers={"Accept": "application/json"})
    assert hit.text == "staging-json"
    assert wrong_value.json()["method"] == missing.json()["method"] == "GET"


def test_body_contains(rules_proxy, origin, recorder):
    with rules_proxy([mark("needle", body_contains="needle")]) as proxy, \
            proxy.client() as client:
        assert client.post(origin.url + "/echo", content=b"hay needle hay").text == "needle"
        assert client.post(origin.url + "/echo?2", content=b"hay hay").json()["body"] == "hay hay"
        assert client.get(origin.url + "/echo?3").json()["method"] == "GET"
    assert [r.path for r in origin.requests] == ["/echo?2", "/echo?3"]
    assert recorder.rules_of("/echo?2") is None


def test_body_contains_sees_the_decoded_body(rules_proxy, origin):
    import gzip

    with rules_proxy([mark("gz", body_contains="needle")]) as proxy, proxy.client() as client:
        response = client.post(origin.url + "/echo", content=gzip.compress(b"a needle"),
                               headers={"Content-Encoding": "gzip"})
    assert response.text == "gz"


def test_all_matchers_must_hold(rules_proxy, origin):
    rule = mark("all", host="127.0.0.1", path="/echo", method="POST",
                headers={"X-Key": "k"}, body_contains="yes", url=f"{origin.url}/*")
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        key = {"X-Key": "k"}
        assert client.post(origin.url + "/echo", content=b"yes", headers=key).text == "all"
        misses = [
            client.put(origin.url + "/echo", content=b"yes", headers=key),
            client.post(origin.url + "/echo", content=b"no", headers=key),
            client.post(origin.url + "/echo", content=b"yes"),
            client.post(origin.url + "/upload", content=b"yes", headers=key),
        ]
    assert [m.status_code for m in misses] == [200, 200, 200, 200]
    assert all(m.text != "all" for m in misses)
    assert len(origin.requests) == 4


def test_a_rule_without_matchers_matches_everything(rules_proxy, origin):
    with rules_proxy([mark("everything")]) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/json").text == "everything"
        assert client.post("http://any.example.test/x", content=b"1").text == "everything"
    assert origin.requests == []


def test_disabled_rule_does_nothing(rules_proxy, origin, recorder):
    rules = [{**mark("off", path="/json"), "enabled": False}]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/json").json()["hello"] == "world"
    assert recorder.rules_of("/json") is None


def test_priority_orders_rules_and_ties_keep_file_order(rules_proxy, origin, recorder):
    rules = [mark("low", path="/a"), mark("high", path="/a", priority=5),
             mark("tie-first", path="/b", priority=1), mark("tie-second", path="/b", priority=1),
             mark("negative", path="/b", priority=-3)]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/a").text == "high"
        assert client.get(origin.url + "/b").text == "tie-first"
    assert recorder.rules_of("/a") == ["high"]
    assert recorder.rules_of("/b") == ["tie-first"]


def test_a_body_rule_of_higher_priority_is_not_overtaken(rules_proxy, origin):
    """Matching pauses at the body rule until the body is in, so the lower-priority block
    that needs no body cannot answer first."""
    rules = [mark("body-mock", body_contains="vip", priority=10),
             {"name": "block-all", "path": "/echo", "block": True}]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        assert client.post(origin.url + "/echo", content=b"a vip").text == "body-mock"
        blocked = client.post(origin.url + "/echo", content=b"nobody")
    assert blocked.status_code == 403
    assert origin.requests == []


def test_touching_a_flow_adds_nothing_to_the_wire(rules_proxy, origin, recorder):
    """A matching rule without header actions leaves request and response as an untouched
    flow through the same proxy has them."""
    rule = {"name": "only-delay", "url": "*touched=yes", "delay": 0}
    sent = {"X-Client": "1"}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        touched = client.get(origin.url + "/headers?X-A=1&touched=yes", headers=sent)
        untouched = client.get(origin.url + "/headers?X-A=1&touched=no", headers=sent)
    assert recorder.rules_of("touched=yes") == ["only-delay"]
    assert recorder.rules_of("touched=no") is None
    assert sorted(touched.headers) == sorted(untouched.headers)
    assert touched.content == untouched.content
    assert origin.requests[0].headers == origin.requests[1].headers
