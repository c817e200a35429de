from nectoproxy import Response


def test_plain_and_tls(proxy, origin, tls_origin):
    with proxy.client() as c:
        assert c.get(origin.url + "/").text == "hello from origin\n"
        assert c.get(tls_origin.url + "/json").json() == {"hello": "world", "n": 1}


def test_plugin_answers(make_proxy, origin):
    class P:
        async def on_request(self, flow):
            flow.response = Response.make(201, "made")
    with make_proxy(plugins=[P()]) as p, p.client() as c:
        r = c.get(origin.url + "/")
    assert r.status_code == 201 and r.text == "made"
    assert origin.requests == []
