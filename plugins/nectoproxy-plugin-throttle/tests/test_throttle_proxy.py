"""Latency, jitter, loss, Offline, per-host profiles and start-up, through a real proxy."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
from nectoproxy_plugin_throttle import SIMULATED_HEADER, Throttle
from throttle_testutil import Observer, captured_log, only_this_entry_point, throttled

import nectoproxy
from nectoproxy import Flow, Response
from nectoproxy.testing.origin import pattern_bytes


def test_latency_without_jitter_is_added_to_every_request(make_proxy, origin):
    options = {"profile": "lag", "profiles": {"lag": {"latency_ms": 300, "jitter_ms": 0}}}
    observer = Observer()
    with throttled(make_proxy, options, observer) as proxy, proxy.client() as client:
        for _ in range(2):
            started = time.monotonic()
            response = client.get(origin.url + "/")
            assert time.monotonic() - started >= 0.3
            assert response.text == "hello from origin\n"
    assert [r["latency_ms"] for r in observer.records] == [300, 300]
    assert [r["profile"] for r in observer.records] == ["lag", "lag"]


def _latencies(make_proxy, origin, options, count):
    observer = Observer()
    waited = []
    with throttled(make_proxy, options, observer) as proxy, proxy.client() as client:
        for _ in range(count):
            started = time.monotonic()
            assert client.get(origin.url + "/").status_code == 200
            waited.append(time.monotonic() - started)
    latencies = [r["latency_ms"] for r in observer.records]
    assert all(w >= ms / 1000 for w, ms in zip(waited, latencies, strict=True))
    return latencies


def test_jitter_stays_within_bounds_and_repeats_with_a_seed(make_proxy, origin):
    options = {"profile": "j", "seed": 7,
               "profiles": {"j": {"latency_ms": 60, "jitter_ms": 40}}}
    first = _latencies(make_proxy, origin, options, 6)
    assert all(20 <= ms <= 100 for ms in first), first
    assert len(set(first)) > 1  # it does vary
    assert _latencies(make_proxy, origin, options, 6) == first  # same seed, same draws


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_total_loss_in_reset_mode_drops_the_connection(make_proxy, origin, tls_origin, scheme):
    server = origin if scheme == "http" else tls_origin
    options = {"profile": "lossy", "profiles": {"lossy": {"loss": 1.0, "loss_mode": "reset"}}}
    observer = Observer()
    with throttled(make_proxy, options, observer) as proxy:
        with proxy.client() as client, pytest.raises(httpx.TransportError):
            client.get(server.url + "/")
        result = proxy.curl("--http1.1", server.url + "/")
        if scheme == "https":  # on HTTP/2 only the request's stream is reset
            h2_result = proxy.curl("--http2", server.url + "/")
            assert h2_result.returncode == 92, h2_result.stderr
            assert b"CANCEL" in h2_result.stderr
    assert result.returncode == 52, result.stderr  # curl: "Empty reply from server"
    assert server.requests == []
    assert observer.records[-1]["lost"] is True
    assert observer.records[-1]["loss_mode"] == "reset"
    assert len(observer.errors) == (3 if scheme == "https" else 2)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_total_loss_in_503_mode_answers_503(make_proxy, origin, tls_origin, scheme):
    server = origin if scheme == "http" else tls_origin
    options = {"profile": "lossy", "loss_mode": "503", "profiles": {"lossy": {"loss": 1}}}
    with throttled(make_proxy, options) as proxy, proxy.client() as client:
        response = client.post(server.url + "/upload", content=b"x" * 1000)
        result = proxy.curl("-w", "|%{http_code}", server.url + "/")
    assert response.status_code == 503
    assert response.text == "throttle: simulated packet loss (profile lossy)\n"
    assert response.headers[SIMULATED_HEADER] == "packet loss"
    assert result.returncode == 0
    assert result.stdout == b"throttle: simulated packet loss (profile lossy)\n|503"
    assert server.requests == []


def _outcomes(make_proxy, origin, count):
    options = {"profile": "half", "seed": 11, "loss_mode": "503",
               "profiles": {"half": {"loss": 0.5}}}
    with throttled(make_proxy, options) as proxy, proxy.client() as client:
        return [client.get(origin.url + "/").status_code for _ in range(count)]


def test_partial_loss_is_repeatable_with_a_seed(make_proxy, origin):
    first = _outcomes(make_proxy, origin, 12)
    assert set(first) == {200, 503}
    assert _outcomes(make_proxy, origin, 12) == first
    assert len(origin.requests) == 2 * first.count(200)


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_offline_preset_fails_every_request_at_once(make_proxy, origin, tls_origin, mode):
    observer = Observer()
    urls = [origin.url + "/", tls_origin.url + "/json", "http://api.offline.test/",
            "https://www.offline.test/x"]
    with throttled(make_proxy, {"profile": "Offline", "loss_mode": mode}, observer) as proxy, \
            proxy.client() as client:
        for url in urls:
            if mode == "503":
                response = client.get(url)
                assert response.status_code == 503
                assert response.text == "throttle: simulated offline (profile Offline)\n"
            else:
                with pytest.raises(httpx.TransportError):
                    client.get(url)
    assert origin.requests == [] and tls_origin.requests == []
    assert [(r["profile"], r["lost"], r["latency_ms"]) for r in observer.records] == \
        [("Offline", True, 0.0)] * len(urls)


def test_per_host_profiles_first_match_wins(make_proxy, origin):
    observer = Observer()
    options = {"profile": "offline", "loss_mode": "503",
               "hosts": {"127.0.0.*": "regular-4g", "127.*": "offline", "*.local.test": "wifi"}}
    with throttled(make_proxy, options, observer) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/").status_code == 200
        assert client.get("http://elsewhere.test/").status_code == 503
    assert [r["profile"] for r in observer.records] == ["Regular 4G", "Offline"]

    observer = Observer()
    options["hosts"] = {"127.*": "offline", "127.0.0.*": "regular-4g"}
    with throttled(make_proxy, options, observer) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/").status_code == 503
    assert [r["profile"] for r in observer.records] == ["Offline"]
    assert len(origin.requests) == 1


def test_hosts_without_a_default_leave_other_hosts_alone(make_proxy, origin):
    observer = Observer()
    options = {"hosts": {"*.offline.test": "offline"}, "loss_mode": "503"}
    with throttled(make_proxy, options, observer) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/").status_code == 200
        assert client.get("https://a.offline.test/").status_code == 503
    assert observer.records[0] is None  # not throttled at all
    assert observer.records[1]["profile"] == "Offline"


def test_the_proxys_own_setup_pages_are_never_throttled(make_proxy):
    observer = Observer()
    with throttled(make_proxy, {"profile": "offline", "loss_mode": "503"}, observer,
                   proxy={"onboarding_host": "setup.proxy.test"}) as proxy, \
            proxy.client() as client:
        response = client.get("http://setup.proxy.test/")
    assert response.status_code == 200
    assert observer.records == [None]


def test_none_exempts_a_host_from_the_default(make_proxy, origin):
    observer = Observer()
    options = {"profile": "offline", "hosts": {"127.0.0.1": "None"}}
    with throttled(make_proxy, options, observer) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/").status_code == 200
    assert observer.records == [None]


class Mock:
    """Another plugin answering ``mock.test`` itself, in on_request_headers."""

    name = "throttle_test_mock"
    body = pattern_bytes(64 * 1024, seed=9)

    def on_request_headers(self, flow: Flow) -> None:
        if flow.request.host == "mock.test":
            flow.response = Response.make(200, self.body,
                                          {"Content-Type": "application/octet-stream"})


def test_answers_made_by_other_plugins_are_delayed_and_paced(make_proxy):
    observer = Observer()
    options = {"profile": "p", "profiles": {"p": {"download_bps": 256 * 1024,
                                                  "latency_ms": 50}}}
    config = {"plugins": {"throttle": options}}
    with make_proxy(plugins=[Throttle(), Mock(), observer], config=config) as proxy, \
            proxy.client() as client:
        started = time.monotonic()
        response = client.get("http://mock.test/file")
        elapsed = time.monotonic() - started
    assert response.content == Mock.body
    assert elapsed >= 0.05 + 0.2  # latency, then 64 KiB at 256 KiB/s less the first slice
    assert observer.records[0]["profile"] == "p"


def test_start_up_log_shows_the_active_profiles(make_proxy, origin):
    options = {"profile": "slow-3g",
               "hosts": {"*.example.test": "slow-3g", "api.local.test": "custom1"},
               "profiles": {"custom1": {"download_bps": 32768, "latency_ms": 20, "loss": 0.05,
                                        "loss_mode": "503"}}}
    with captured_log() as messages, throttled(make_proxy, options):
        pass
    assert messages == [
        "throttle: default profile Slow 3G (97 KiB/s down, 41 KiB/s up, 400±100 ms, 0% loss);"
        + " 2 host rules",
        "throttle: hosts *.example.test -> Slow 3G (97 KiB/s down, 41 KiB/s up, 400±100 ms,"
        + " 0% loss)",
        "throttle: hosts api.local.test -> custom1 (32 KiB/s down, unlimited up, 20±0 ms,"
        + " 5% loss (answered 503))",
    ]


def test_bad_table_stops_start_up_naming_the_key(make_proxy):
    proxy = throttled(make_proxy, {"profile": "wifi", "hosts": {"a.test": "5g"}})
    with pytest.raises(nectoproxy.ConfigError, match=r'hosts\."a\.test": unknown profile'), \
            proxy:
        pass


def test_loaded_through_its_entry_point(make_proxy, origin):
    observer = Observer()
    config = {"plugins": only_this_entry_point(
        throttle={"profile": "offline", "loss_mode": "503"})}
    with captured_log() as messages, make_proxy(plugins=[observer], config=config) as proxy, \
            proxy.client() as client:
        assert client.get(origin.url + "/").status_code == 503
    assert observer.records[0]["profile"] == "Offline"
    assert messages[0].startswith("throttle: default profile Offline (offline")


def test_installed_but_unconfigured_it_stays_out_of_the_way(make_proxy, origin):
    observer = Observer()
    config = {"plugins": only_this_entry_point()}
    with captured_log() as messages, make_proxy(plugins=[observer], config=config) as proxy, \
            proxy.client() as client:
        assert client.get(origin.url + "/").status_code == 200
    assert observer.records == [None]
    assert messages == []  # switched off by on_configure: not even on_start runs


def test_nectoproxy_plugins_lists_it():
    result = subprocess.run([sys.executable, "-m", "nectoproxy", "plugins", "--no-config",
                             "--json"], capture_output=True, timeout=60, check=True)
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["throttle"]["source"] == "entry point"
    assert rows["throttle"]["location"] == "nectoproxy-plugin-throttle"
    hooks = set(rows["throttle"]["hooks"])
    assert {"on_configure", "on_request_headers", "on_response_headers"} <= hooks
    assert not hooks & {"on_request", "on_response"}  # it never makes a body buffer
