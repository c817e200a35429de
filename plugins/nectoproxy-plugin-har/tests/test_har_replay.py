"""Replay: answer requests from a recorded HAR file, with the origin stopped."""

from __future__ import annotations

import json
import re

import pytest
from har_testing import validate, wait_for_entries
from nectoproxy_plugin_har import HarPlugin

import nectoproxy
from nectoproxy.testing.origin import GZIP_TEXT, JSON_BODY, Origin, pattern_bytes


def record(make_proxy, path, requests):
    """Record ``requests`` ((method, url, kwargs) triples) to ``path``; the responses."""
    plugin = HarPlugin()
    answers = []
    with make_proxy(plugins=[plugin], config={"plugins": {"har": {"path": str(path)}}}) \
            as proxy, proxy.client() as client:
        for method, url, kwargs in requests:
            answers.append(client.request(method, url, **kwargs))
        validate(wait_for_entries(plugin.path, len(requests)))
    return answers


def test_replay_with_the_origin_stopped(make_proxy, origin, tls_origin, tmp_path):
    har = tmp_path / "recorded.har"
    recorded = record(make_proxy, har, [
        ("GET", origin.url + "/json", {}),
        ("GET", tls_origin.url + "/gzip-text", {}),
        ("GET", origin.url + "/bytes/3000", {}),
        ("POST", origin.url + "/echo", {"json": {"n": 1}}),
        ("GET", origin.url + "/echo?a=1&b=2", {"headers": {"X-Take": "one"}}),
        ("GET", origin.url + "/echo?a=1&b=2", {"headers": {"X-Take": "two"}}),
        ("GET", origin.url + "/status/404", {}),
    ])
    reached = len(origin.requests) + len(tls_origin.requests)
    origin.stop()
    tls_origin.stop()

    options = {"replay": str(har), "replay_fallthrough": False}
    with make_proxy(plugins=[HarPlugin()], config={"plugins": {"har": options}}) as proxy, \
            proxy.client() as client:
        assert client.get(origin.url + "/json").content == JSON_BODY
        gzip_text = client.get(tls_origin.url + "/gzip-text")
        assert gzip_text.content == GZIP_TEXT
        assert "content-encoding" not in gzip_text.headers  # stored decoded, sent decoded
        binary = client.get(origin.url + "/bytes/3000")
        assert binary.content == pattern_bytes(3000)
        assert binary.headers["content-type"] == "application/octet-stream"
        assert binary.headers["content-length"] == "3000"
        posted = client.post(origin.url + "/echo", json={"n": 2})
        assert posted.json() == recorded[3].json()  # matched by method and URL, not body
        takes = [client.get(origin.url + "/echo?a=1&b=2").json() for _ in range(3)]
        assert [dict(t["headers"])["X-Take"] for t in takes] == ["one", "two", "two"]
        missing = client.get(origin.url + "/status/404")
        assert missing.status_code == 404 and missing.reason_phrase == "Not Found"
        for answer in (binary, gzip_text):
            assert answer.headers["X-Origin"] == "nectoproxy-test"  # recorded headers
        unknown = client.get(origin.url + "/never-recorded")
        assert unknown.status_code == 404
        assert "no recorded response for GET" in unknown.text
        other_order = client.get(origin.url + "/echo?b=2&a=1")
        assert other_order.status_code == 404  # query order matters unless told otherwise
    assert len(origin.requests) + len(tls_origin.requests) == reached


def test_ignore_query_order_and_fallthrough(make_proxy, origin, tmp_path):
    har = tmp_path / "recorded.har"
    record(make_proxy, har, [("GET", origin.url + "/headers?X-Recorded=yes&a=1&b=2", {})])
    before = len(origin.requests)
    options = {"replay": str(har), "replay_ignore_query_order": True}
    with make_proxy(plugins=[HarPlugin()], config={"plugins": {"har": options}}) as proxy, \
            proxy.client() as client:
        replayed = client.get(origin.url + "/headers?b=2&X-Recorded=yes&a=1")
        assert replayed.headers["X-Recorded"] == "yes"
        assert len(origin.requests) == before  # answered from the file
        live = client.get(origin.url + "/json")  # not in the file: goes to the origin
        assert live.content == JSON_BODY
        assert len(origin.requests) == before + 1


def test_record_while_replaying_marks_replayed_entries(make_proxy, origin, tmp_path):
    har = tmp_path / "recorded.har"
    record(make_proxy, har, [("GET", origin.url + "/json", {})])
    plugin = HarPlugin()
    options = {"replay": str(har), "path": str(tmp_path / "second.har")}
    with make_proxy(plugins=[plugin], config={"plugins": {"har": options}}) as proxy, \
            proxy.client() as client:
        client.get(origin.url + "/json")
        client.get(origin.url + "/html")
        document = wait_for_entries(plugin.path, 2)
    validate(document)
    replayed, live = document["log"]["entries"]
    assert replayed["_replayed"] is True and "serverIPAddress" not in replayed
    assert replayed["response"]["content"]["text"] == JSON_BODY.decode()
    assert replayed["timings"]["connect"] == -1
    assert "_replayed" not in live and live["serverIPAddress"] == "127.0.0.1"


def test_entries_without_a_body_are_not_replayed(make_proxy, origin, tmp_path):
    har = tmp_path / "recorded.har"
    plugin = HarPlugin()
    options = {"path": str(har), "max_body_size": 100}
    with make_proxy(plugins=[plugin], config={"plugins": {"har": options}}) as proxy, \
            proxy.client() as client:
        client.get(origin.url + "/bytes/5000")
        wait_for_entries(har, 1)
    with Origin() as live:
        url = live.url + "/bytes/5000"
        document = json.loads(har.read_text())
        document["log"]["entries"][0]["request"]["url"] = url
        har.write_text(json.dumps(document))
        with make_proxy(plugins=[HarPlugin()], config={"plugins": {"har": {"replay": str(har)}}}) \
                as proxy, proxy.client() as client:
            assert client.get(url).content == pattern_bytes(5000)
        assert len(live.requests) == 1  # the truncated entry was skipped: the origin answered


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "not JSON"),
    ('{"log": {}}', "no log.entries"),
    ('{"log": {"entries": [{"request": {}}]}}', "log.entries[0].request.method: missing"),
    (('{"log": {"entries": [{"request": {"method": "GET", "url": "http://a.test/"}, '
      '"response": {"status": 200, "content": {"text": "!!", "encoding": "base64"}}}]}}'),
     "log.entries[0].response.content.text: invalid base64"),
])
def test_bad_replay_file_stops_start_up(make_proxy, tmp_path, content, message):
    har = tmp_path / "bad.har"
    har.write_text(content)
    proxy = make_proxy(plugins=[HarPlugin()], config={"plugins": {"har": {"replay": str(har)}}})
    with pytest.raises(nectoproxy.ConfigError, match=re.escape(message)) as info, proxy:
        pass
    assert str(har) in str(info.value)


def test_missing_replay_file_stops_start_up(make_proxy, tmp_path):
    options = {"replay": str(tmp_path / "nowhere.har")}
    proxy = make_proxy(plugins=[HarPlugin()], config={"plugins": {"har": options}})
    with pytest.raises(nectoproxy.ConfigError, match="cannot read"), proxy:
        pass
