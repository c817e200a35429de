"""map_remote, modify_request, modify_response, and how several rules accumulate."""

from __future__ import annotations

from typing import Any


def echoed_headers(response: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in response.json()["headers"]}


def test_map_remote_keeps_path_and_query(rules_proxy, origin, recorder):
    rule = {"name": "to-local", "host": "api.example.test", "map_remote": origin.url}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        response = client.get("http://api.example.test/echo?a=1&b=2")
    assert response.json()["path"] == "/echo?a=1&b=2"
    assert echoed_headers(response)["host"] == f"127.0.0.1:{origin.port}"
    assert recorder.rules_of("api.example.test") == ["to-local"]


def test_map_remote_from_https_with_a_path_prefix(rules_proxy, origin, tls_origin):
    """https://api.example.test/10 -> <tls origin>/bytes/10; and -> plain http too."""
    rules = [{"url": "https://api.example.test/*", "map_remote": {"url": tls_origin.url + "/bytes/"}},
             {"host": "plain.example.test", "map_remote": origin.url + "/"}]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        secure = client.get("https://api.example.test/10")
        plain = client.get("https://plain.example.test/json")
    assert (secure.status_code, len(secure.content)) == (200, 10)
    assert tls_origin.requests[-1].path == "/bytes/10"
    assert plain.json()["hello"] == "world"


def test_map_remote_without_keeping_the_path(rules_proxy, origin):
    rule = {"host": "api.example.test",
            "map_remote": {"url": origin.url + "/echo?fixed=1", "keep_path": False}}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        response = client.post("http://api.example.test/some/where?dropped=1", content=b"body")
    assert response.json()["path"] == "/echo?fixed=1"
    assert response.json()["body"] == "body"


def test_modify_request_headers_query_and_body(rules_proxy, origin, recorder):
    rule = {"name": "rewrite", "path": "/echo", "modify_request": {
        "set_headers": {"X-Added": "yes", "User-Agent": "rules-test"},
        "remove_headers": ["X-Secret", "cookie"],
        "set_query": {"debug": "1", "page": "2"},
        "remove_query": ["token"],
        "body": "replaced body with cats",
        "replace": [{"find": "cats", "replace": "dogs"},
                    {"find": r"(\w+) body", "replace": r"\1 BODY", "regex": True}],
    }}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        response = client.post(origin.url + "/echo?token=t&page=1&keep=k", content=b"original",
                               headers={"X-Secret": "s", "Cookie": "c=1", "X-Kept": "k"})
    echo = response.json()
    headers = echoed_headers(response)
    assert headers["x-added"] == "yes" and headers["user-agent"] == "rules-test"
    assert "x-secret" not in headers and "cookie" not in headers
    assert headers["x-kept"] == "k"
    assert echo["path"] == "/echo?page=2&keep=k&debug=1"
    assert echo["body"] == "replaced BODY with dogs"
    assert headers["content-length"] == str(len("replaced BODY with dogs"))
    assert recorder.rules_of("/echo") == ["rewrite"]


def test_modify_request_body_on_a_get_without_body(rules_proxy, origin):
    rule = {"path": "/echo", "modify_request": {"body": {"injected": True}}}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        echo = client.get(origin.url + "/echo").json()
    assert echo["body"] == '{"injected": true}'


def test_modify_response_status_headers_and_body(rules_proxy, origin, recorder):
    rules = [{"name": "json", "path": "/json", "modify_response": {
                 "status": 418, "set_headers": {"Cache-Control": "no-store"},
                 "remove_headers": ["X-Origin", "server"],
                 "replace": [{"find": "world", "replace": "rules"},
                             {"find": r"\"n\": \d+", "replace": "\"n\": 99", "regex": True}]}},
             {"name": "html", "path": "/html", "modify_response": {"body": "<p>new</p>"}}]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        json_response = client.get(origin.url + "/json")
        html = client.get(origin.url + "/html")
    assert json_response.status_code == 418
    assert json_response.reason_phrase == "I'm a Teapot"
    assert json_response.headers["cache-control"] == "no-store"
    assert "x-origin" not in json_response.headers and "server" not in json_response.headers
    assert json_response.json() == {"hello": "rules", "n": 99}
    assert html.text == "<p>new</p>"
    assert html.headers["content-type"] == "text/html; charset=utf-8"  # kept from the origin
    assert recorder.rules_of("/json") == ["json"]


def test_modify_response_of_a_gzip_body(rules_proxy, origin):
    from nectoproxy.testing.origin import GZIP_TEXT

    word = GZIP_TEXT.split()[0].decode()
    rule = {"path": "/gzip-text", "modify_response": {"replace": [{"find": word,
                                                                   "replace": "REPLACED"}]}}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        response = client.get(origin.url + "/gzip-text")
    assert response.headers["content-encoding"] == "gzip"
    assert response.text == GZIP_TEXT.decode().replace(word, "REPLACED")


def test_modify_over_https(rules_proxy, tls_origin):
    rule = {"url": f"{tls_origin.url}/echo*",
            "modify_request": {"set_headers": {"X-Via-Rule": "1"}, "set_query": {"q": "x"}},
            "modify_response": {"set_headers": {"X-Changed": "1"},
                                "replace": [{"find": "X-Via-Rule", "replace": "X-Seen"}]}}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        response = client.get(tls_origin.url + "/echo")
    assert response.headers["x-changed"] == "1"
    assert ["X-Seen", "1"] in response.json()["headers"]
    assert tls_origin.requests[-1].path == "/echo?q=x"
    assert tls_origin.requests[-1].tls


def test_modifications_accumulate_in_priority_order(rules_proxy, origin, recorder):
    """Higher priority first, ties in file order; each rule sees what the previous did, so the
    last one to set a header wins, and find-and-replace chains."""
    rules = [
        {"name": "second", "path": "/echo", "priority": 1, "body_contains": "input",
         "modify_request": {"set_headers": {"X-Order": "second"},
                            "replace": [{"find": "A", "replace": "B"}]},
         "modify_response": {"set_headers": {"X-Last": "second"},
                             "replace": [{"find": "1", "replace": "2"}]}},
        {"name": "first", "path": "/echo", "priority": 10,
         "modify_request": {"set_headers": {"X-Order": "first", "X-First": "1"},
                            "body": "A"},
         "modify_response": {"set_headers": {"X-Last": "first"}, "body": "1"}},
        {"name": "third", "path": "/echo", "priority": 1,
         "modify_request": {"set_headers": {"X-Order": "third"},
                            "replace": [{"find": "B", "replace": "C"}]},
         "modify_response": {"set_headers": {"X-Last": "third"},
                             "replace": [{"find": "2", "replace": "3"}]}},
        {"name": "unrelated", "path": "/json", "priority": 5, "block": True},
    ]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        response = client.post(origin.url + "/echo", content=b"input")
    received = origin.requests[-1]
    assert received.body == b"C"
    assert received.header("X-Order") == "third" and received.header("X-First") == "1"
    assert response.text == "3"
    assert response.headers["x-last"] == "third"
    assert recorder.rules_of("/echo") == ["first", "second", "third"]


def test_an_answer_ends_the_list_but_earlier_rules_still_apply(rules_proxy, recorder):
    rules = [{"name": "stamp", "priority": 2, "modify_response": {"set_headers": {"X-S": "1"}}},
             {"name": "mock", "priority": 1, "mock": {"body": "m"}},
             {"name": "never", "priority": 0, "modify_response": {"body": "never"}}]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        response = client.get("http://api.example.test/")
    assert (response.text, response.headers["x-s"]) == ("m", "1")
    assert recorder.rules_of("api.example.test") == ["stamp", "mock"]
