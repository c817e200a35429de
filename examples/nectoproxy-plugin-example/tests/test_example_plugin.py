"""The example plugin, through a real proxy, against the local fake origins."""

from __future__ import annotations

import nectoproxy_plugin_example as plugin
import pytest

import nectoproxy


def test_adds_default_header_over_http_and_https(make_proxy, origin, tls_origin):
    with make_proxy(plugins=[plugin]) as proxy, proxy.client() as client:
        plain = client.get(origin.url + "/")
        secure = client.get(tls_origin.url + "/json")
    for response in (plain, secure):
        assert response.status_code == 200
        assert response.headers["X-Example-Plugin"] == plugin.DEFAULTS["greeting"]
    assert secure.json() == {"hello": "world", "n": 1}


def test_options_from_its_table(make_proxy, origin):
    options = {"header_name": "X-Greeting", "greeting": "hi there"}
    with make_proxy(plugins=[plugin], config={"plugins": {"example": options}}) as proxy, \
            proxy.client() as client:
        response = client.get(origin.url + "/")
    assert response.headers["X-Greeting"] == "hi there"
    assert "X-Example-Plugin" not in response.headers
    assert response.text == "hello from origin\n"


@pytest.mark.parametrize(("options", "key"), [
    ({"header_name": 42}, "header_name"),
    ({"greeting": ["not", "a", "string"]}, "greeting"),
    ({"header_name": "bad header"}, "header_name"),
    ({"greeting": "two\nlines"}, "greeting"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_option_fails_start_up_naming_the_key(make_proxy, options, key):
    proxy = make_proxy(plugins=[plugin], config={"plugins": {"example": options}})
    with pytest.raises(nectoproxy.ConfigError, match=key) as info, proxy:
        pass
    assert "plugins.example" in str(info.value)


def test_has_a_version():
    assert plugin.__version__ == "0.1.0"
