"""The recorded file against a JSON Schema of HAR 1.2 and against Chrome DevTools' importer."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from har_testing import (
    check_chrome_import,
    entry_for,
    validate,
    validate_schema,
    wait_for_entries,
)
from nectoproxy_plugin_har import HarPlugin

from nectoproxy import Flow, Response
from nectoproxy.testing.origin import free_port


class Mock:
    """Answers one host itself, so that a plugin-made response is recorded too."""

    name = "mock"

    def on_request_headers(self, flow: Flow) -> None:
        if flow.request.host == "api.example.test":
            flow.response = Response.make(201, {"mocked": True},
                                          {"Set-Cookie": "k=v; Path=/; Expires=garbage"})


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, make_proxy_module, origin_module, tls_origin_module):
    path = tmp_path_factory.mktemp("har") / "mixed.har"
    plugin = HarPlugin()
    config = {"plugins": {"har": {"path": str(path), "max_body_size": 4096}}}
    with make_proxy_module(plugins=[plugin, Mock()], config=config) as proxy, \
            proxy.client() as client:
        client.get(origin_module.url + "/json?x=1&x=2")
        client.get(tls_origin_module.url + "/gzip-text", headers={"Cookie": "a=1"})
        client.post(tls_origin_module.url + "/upload?binary=1", content=bytes(range(256)) * 4,
                    headers={"Content-Type": "application/octet-stream"})
        client.put(origin_module.url + "/upload?form=1", data={"form": "yes"})
        client.get(origin_module.url + "/bytes/10000")
        client.head(origin_module.url + "/html")
        client.get(origin_module.url + "/status/304")
        client.get("http://api.example.test/things")
        client.get(f"http://127.0.0.1:{free_port()}/refused")
        return wait_for_entries(plugin.path, 9)


# Module-scoped versions of the function-scoped fixtures, so the mixed file is recorded once.
@pytest.fixture(scope="module")
def make_proxy_module(shared_certs_dir, origin_ca_path):
    from nectoproxy.testing import RunningProxy, proxy_config

    def factory(plugins=(), config=None):
        return RunningProxy(proxy_config(shared_certs_dir, origin_ca_path, config),
                            plugins=plugins)
    return factory


@pytest.fixture(scope="module")
def origin_module():
    from nectoproxy.testing.origin import Origin

    with Origin() as server:
        yield server


@pytest.fixture(scope="module")
def tls_origin_module(origin_ca):
    from nectoproxy.testing.origin import Origin

    with Origin(tls=True, ca=origin_ca) as server:
        yield server


def test_recorded_file_validates(recorded):
    validate(recorded)
    # Flows on different connections may finish (and be written) in any order.
    statuses = sorted(e["response"]["status"] for e in recorded["log"]["entries"])
    assert statuses == [0, 200, 200, 200, 200, 200, 200, 201, 304]
    entries = [entry_for(recorded, part) for part in (
        "/json?x=1", "/gzip-text", "/upload?binary=1", "/upload?form=1", "/bytes/10000",
        "/html", "/status/304", "api.example.test", "/refused")]
    binary_post = entries[2]["request"]["postData"]
    assert binary_post["_encoding"] == "base64" and binary_post["mimeType"] == \
        "application/octet-stream"
    assert entries[3]["request"]["postData"]["params"] == [{"name": "form", "value": "yes"}]
    assert entries[4]["response"]["content"]["_truncated"] is True  # 10000 > 4096
    assert entries[5]["response"]["content"]["text"] == ""  # HEAD: no body
    mocked = entries[7]
    assert mocked["response"]["cookies"] == [{"name": "k", "value": "v", "path": "/",
                                              "httpOnly": False, "secure": False}]
    assert mocked["timings"]["connect"] == -1 and "serverIPAddress" not in mocked
    assert entries[8]["response"]["_error"]


def _broken(document: dict[str, Any], change) -> dict[str, Any]:
    copied = copy.deepcopy(document)
    change(copied["log"]["entries"][0])
    return copied


@pytest.mark.parametrize("change", [
    lambda e: e.pop("timings"),
    lambda e: e["timings"].pop("send"),
    lambda e: e["timings"].update(wait=-1),
    lambda e: e.update(startedDateTime="2024-05-01 12:00:00"),  # no T, no time zone
    lambda e: e["request"].pop("queryString"),
    lambda e: e["request"].update(headersSize="12"),
    lambda e: e["response"]["content"].pop("mimeType"),
    lambda e: e["response"].update(status="200"),
    lambda e: e["response"]["headers"].append({"name": "X"}),
    lambda e: e.update(unexpected=True),  # custom fields must start with "_"
], ids=["timings", "send", "negative wait", "date", "queryString", "headersSize type",
        "mimeType", "status type", "header value", "unknown field"])
def test_schema_rejects_what_the_spec_forbids(recorded, change):
    validate_schema(recorded)
    with pytest.raises(jsonschema.ValidationError):
        validate_schema(_broken(recorded, change))


@pytest.mark.parametrize("change", [
    lambda e: e.update(startedDateTime="yesterday"),
    lambda e: e["request"].update(postData={"mimeType": "text/plain"}),  # no text
    lambda e: e.update(response=None),
    lambda e: e["timings"].update(receive="soon"),
])
def test_chrome_check_catches_what_breaks_the_import(recorded, change):
    check_chrome_import(recorded)
    with pytest.raises((AssertionError, KeyError, TypeError, ValueError)):
        check_chrome_import(_broken(recorded, change))
