"""What a recorded entry holds, for real flows through a real proxy to local origins."""

from __future__ import annotations

import base64
import hashlib
import json

from har_testing import entry_for, header, validate, wait_for_entries
from nectoproxy_plugin_har import HarPlugin

from nectoproxy.testing.origin import GZIP_TEXT, JSON_BODY, free_port, pattern_bytes, pattern_sha256


def recorder(make_proxy, tmp_path, proxy_options=None, **options):
    plugin = HarPlugin()
    options.setdefault("path", str(tmp_path / "flows.har"))
    config = {"plugins": {"har": options}}
    if proxy_options:
        config["proxy"] = proxy_options
    return plugin, make_proxy(plugins=[plugin], config=config)


def test_http_and_https_flows(make_proxy, origin, tls_origin, tmp_path):
    plugin, proxy = recorder(make_proxy, tmp_path)
    with proxy, proxy.client() as client:
        assert client.get(origin.url + "/json").json() == json.loads(JSON_BODY)
        assert client.get(tls_origin.url + "/html").status_code == 200
        document = wait_for_entries(plugin.path, 2)
    validate(document)
    log = document["log"]
    assert log["version"] == "1.2"
    assert log["creator"]["name"] == "NectoProxy"
    plain, secure = entry_for(document, origin.url), entry_for(document, tls_origin.url)
    assert plain["request"]["url"] == origin.url + "/json"
    assert secure["request"]["url"] == tls_origin.url + "/html"
    for entry in (plain, secure):
        assert entry["request"]["method"] == "GET"
        assert entry["request"]["httpVersion"] == "HTTP/1.1"
        assert entry["response"]["status"] == 200
        assert entry["response"]["statusText"] == "OK"
        assert entry["response"]["httpVersion"] == "HTTP/1.1"
        assert entry["serverIPAddress"] == "127.0.0.1"
        assert entry["connection"].isdigit()
        assert entry["cache"] == {}
        assert header(entry["response"], "X-Origin") == "nectoproxy-test"
        assert entry["startedDateTime"].endswith("Z")
        timings = entry["timings"]
        assert timings["dns"] == -1
        assert all(timings[k] >= 0 for k in ("blocked", "connect", "send", "wait", "receive"))
        # HAR 1.2: connect includes ssl, so time is the sum of the others.
        assert entry["time"] == round(sum(v for k, v in timings.items() if k != "ssl" and v > 0),
                                      3)
        assert entry["response"]["headersSize"] > 0
    assert plain["timings"]["ssl"] == -1  # plain HTTP: no TLS handshake
    assert 0 <= secure["timings"]["ssl"] <= secure["timings"]["connect"]  # a new connection
    assert plain["response"]["content"] == {
        "size": len(JSON_BODY), "mimeType": "application/json", "text": JSON_BODY.decode()}
    assert plain["response"]["bodySize"] == len(JSON_BODY)
    assert "hello from origin" in secure["response"]["content"]["text"]
    assert secure["response"]["content"]["mimeType"] == "text/html; charset=utf-8"


def test_post_json_body_and_query_string(make_proxy, origin, tmp_path):
    payload = {"name": "Zoë", "tags": ["a", "b"]}
    plugin, proxy = recorder(make_proxy, tmp_path)
    with proxy, proxy.client() as client:
        echoed = client.post(origin.url + "/echo?b=2&a=1&a=%C3%A9&empty=",
                             json=payload, headers={"Cookie": "sid=abc; theme=dark"}).json()
        document = wait_for_entries(plugin.path, 1)
    assert json.loads(echoed["body"].encode("latin-1")) == payload  # the origin got it intact
    validate(document)
    request = entry_for(document, "/echo")["request"]
    assert request["method"] == "POST"
    assert request["queryString"] == [
        {"name": "b", "value": "2"}, {"name": "a", "value": "1"},
        {"name": "a", "value": "é"}, {"name": "empty", "value": ""}]
    assert request["postData"]["mimeType"] == "application/json"
    assert json.loads(request["postData"]["text"]) == payload
    assert request["bodySize"] == len(request["postData"]["text"].encode())
    assert request["cookies"] == [{"name": "sid", "value": "abc"},
                                  {"name": "theme", "value": "dark"}]


def test_form_post_has_params_too(make_proxy, origin, tmp_path):
    plugin, proxy = recorder(make_proxy, tmp_path)
    with proxy, proxy.client() as client:
        client.post(origin.url + "/echo", data={"q": "a b", "n": "1"})
        document = wait_for_entries(plugin.path, 1)
    validate(document)
    post = entry_for(document, "/echo")["request"]["postData"]
    assert post["text"] == "q=a+b&n=1"
    assert post["params"] == [{"name": "q", "value": "a b"}, {"name": "n", "value": "1"}]


def test_gzip_response_is_recorded_decoded(make_proxy, origin, tmp_path):
    plugin, proxy = recorder(make_proxy, tmp_path)
    with proxy, proxy.client() as client:
        response = client.get(origin.url + "/gzip-text")
        document = wait_for_entries(plugin.path, 1)
    assert response.content == GZIP_TEXT  # httpx undid the gzip: the client got it gzipped
    validate(document)
    entry = entry_for(document, "/gzip-text")
    content = entry["response"]["content"]
    assert content["text"] == GZIP_TEXT.decode()
    assert "encoding" not in content
    assert content["size"] == len(GZIP_TEXT)
    assert header(entry["response"], "Content-Encoding") == "gzip"
    assert entry["response"]["bodySize"] < len(GZIP_TEXT)  # the compressed bytes relayed
    assert content["compression"] == len(GZIP_TEXT) - entry["response"]["bodySize"]


def test_binary_response_is_base64(make_proxy, origin, tmp_path):
    plugin, proxy = recorder(make_proxy, tmp_path)
    with proxy, proxy.client() as client:
        body = client.get(origin.url + "/bytes/5000").content
        document = wait_for_entries(plugin.path, 1)
    validate(document)
    content = entry_for(document, "/bytes/5000")["response"]["content"]
    assert content["encoding"] == "base64"
    assert content["mimeType"] == "application/octet-stream"
    assert base64.b64decode(content["text"]) == body == pattern_bytes(5000)
    assert content["size"] == 5000


def test_body_over_max_body_size_left_out_but_relayed_whole(make_proxy, origin, tmp_path):
    size = 3 * 1024 * 1024  # over the default 1 MiB limit, under the 10 MiB buffer limit
    plugin, proxy = recorder(make_proxy, tmp_path)
    with proxy, proxy.client() as client:
        body = client.get(origin.url + f"/bytes/{size}").content
        small = client.get(origin.url + "/bytes/100").content
        document = wait_for_entries(plugin.path, 2)
    assert hashlib.sha256(body).hexdigest() == pattern_sha256(size)
    assert small == pattern_bytes(100)
    validate(document)
    big = entry_for(document, f"/bytes/{size}")["response"]
    assert "text" not in big["content"]
    assert big["content"]["_truncated"] is True
    assert "max_body_size" in big["content"]["comment"]
    assert big["content"]["size"] == size
    assert big["bodySize"] == size
    assert "text" in entry_for(document, "/bytes/100")["response"]["content"]


def test_streamed_body_is_described_and_relayed_whole(make_proxy, origin, tmp_path):
    size = 600_000  # over a small body_buffer_limit: the proxy streams it
    plugin, proxy = recorder(make_proxy, tmp_path, proxy_options={"body_buffer_limit": 100_000},
                             max_body_size=10 * 1024 * 1024)
    with proxy, proxy.client() as client:
        body = client.get(origin.url + f"/bytes/{size}?chunked=1").content
        upload = client.post(origin.url + "/upload", content=pattern_bytes(size)).json()
        document = wait_for_entries(plugin.path, 2)
    assert hashlib.sha256(body).hexdigest() == pattern_sha256(size)
    assert upload == {"sha256": pattern_sha256(size), "length": size}
    validate(document)
    response = entry_for(document, "/bytes/")["response"]
    assert response["content"]["_truncated"] is True
    assert "streamed" in response["content"]["comment"]
    assert response["bodySize"] == size
    request = entry_for(document, "/upload")["request"]
    assert request["postData"]["_truncated"] is True and request["postData"]["text"] == ""
    assert request["bodySize"] == size


def test_upstream_error_is_an_entry_with_error(make_proxy, origin, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    plugin, proxy = recorder(make_proxy, tmp_path)
    with proxy, proxy.client() as client:
        answer = client.get(closed + "/nothing-here")
        client.get(origin.url + "/")
        document = wait_for_entries(plugin.path, 2)
    assert answer.status_code == 502
    validate(document)
    failed = entry_for(document, "/nothing-here")
    assert failed["response"]["status"] == 0
    assert failed["response"]["_error"] == failed["_error"]
    assert failed["_error"]  # the proxy's one-line description
    assert failed["response"]["_proxyStatus"] == 502
    assert failed["request"]["url"] == closed + "/nothing-here"
    assert failed["timings"]["connect"] >= 0
    assert "serverIPAddress" not in failed
    assert entry_for(document, origin.url + "/")["response"]["status"] == 200


def test_response_cookies_and_redirect(make_proxy, origin, tmp_path):
    query = ("Set-Cookie=sid%3Dxyz%3B%20Path%3D%2F%3B%20HttpOnly%3B%20Secure%3B%20"
             "Expires%3DWed%2C%2021%20Oct%202037%2007%3A28%3A00%20GMT&Location=/elsewhere")
    plugin, proxy = recorder(make_proxy, tmp_path)
    with proxy, proxy.client() as client:
        client.get(origin.url + "/headers?" + query)
        document = wait_for_entries(plugin.path, 1)
    validate(document)
    response = entry_for(document, "/headers")["response"]
    assert response["redirectURL"] == "/elsewhere"
    assert response["cookies"] == [{"name": "sid", "value": "xyz", "path": "/", "httpOnly": True,
                                    "secure": True, "expires": "2037-10-21T07:28:00Z"}]
