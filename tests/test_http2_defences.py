"""HTTP/2 defences (RFC 9113 section 10.5), each driven by a raw ``h2`` client over TLS: the
attacked connection is refused or ended (with the right code, logged once), and the proxy
still serves a new connection afterwards."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import h2.errors
import pytest
from h2wire import H2Client
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
)

from nectoproxy.config import config_from_dict
from nectoproxy.errors import ConfigError
from nectoproxy.testing import RunningProxy
from nectoproxy.testing.origin import Origin, pattern_bytes

LIMITS = {"http2_max_concurrent_streams": 5, "http2_max_header_list_size": 16384,
          "http2_max_resets": 20, "http2_max_control_frames": 50}


@pytest.fixture
def guarded(make_proxy: Callable[..., RunningProxy]) -> Iterator[RunningProxy]:
    with make_proxy(config={"proxy": LIMITS}) as proxy:
        yield proxy


def connect(proxy: RunningProxy, origin: Origin, **kwargs: Any) -> H2Client:
    return H2Client(proxy.port, str(proxy.ca_path), "localhost", origin.port, **kwargs)


def still_serves(proxy: RunningProxy, origin: Origin) -> None:
    with connect(proxy, origin) as fresh:
        result = fresh.get("/bytes/1000")
    assert result.status == 200 and bytes(result.body) == pattern_bytes(1000)


def ended_with(client: H2Client, code: h2.errors.ErrorCodes) -> None:
    assert client.until(lambda: client.terminated is not None)
    assert client.terminated is not None and client.terminated.error_code == code
    assert client.until(lambda: client.closed)


def defence_logs(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "nectoproxy.http2" and words in r.getMessage()]


def test_streams_over_the_limit_are_refused(guarded: RunningProxy, tls_origin: Origin,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "nectoproxy.http2")
    with connect(guarded, tls_origin) as client:
        # Requests whose bodies have not ended keep their streams open. (Sent before the
        # client reads the proxy's SETTINGS, so its h2 does not hold the sixth back.)
        ids = [client.request("/upload", method="POST", body=b"x", end=False)
               for _ in range(6)]
        refused = client.results[ids[5]]
        assert client.until(lambda: refused.done)
        assert refused.reset == h2.errors.ErrorCodes.REFUSED_STREAM
        for stream_id in ids[:5]:
            client.send_body(stream_id, b"yz")
        assert client.until(lambda: all(client.results[i].done for i in ids[:5]))
        for stream_id in ids[:5]:
            assert client.results[stream_id].status == 200
        assert client.terminated is None
        assert client.get("/bytes/10").status == 200  # the connection itself goes on
    assert len(defence_logs(caplog, "http2_max_concurrent_streams")) == 1
    still_serves(guarded, tls_origin)


def test_an_hpack_bomb_ends_the_connection(guarded: RunningProxy, tls_origin: Origin,
                                           caplog: pytest.LogCaptureFixture) -> None:
    with connect(guarded, tls_origin) as client:
        # One 4 KiB field in the dynamic table, then referred to by index: a few bytes on
        # the wire each, 64 KiB once decoded.
        client.request("/", headers=[(b"x-bomb", b"a" * 4000)] * 16)
        ended_with(client, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    assert len(defence_logs(caplog, "http2_max_header_list_size")) == 1
    still_serves(guarded, tls_origin)


def test_rapid_reset_ends_the_connection(guarded: RunningProxy, tls_origin: Origin,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with connect(guarded, tls_origin) as client:
        for _ in range(30):  # (each within the concurrency limit: opened, then reset)
            stream_id = client.request("/bytes/100000")
            client.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        client.flush()
        ended_with(client, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    assert len(defence_logs(caplog, "rapid reset")) == 1
    still_serves(guarded, tls_origin)


def test_a_continuation_flood_ends_the_connection(guarded: RunningProxy, tls_origin: Origin,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with connect(guarded, tls_origin) as client:
        head = HeadersFrame(1)
        head.data = client.conn.encoder.encode([(b":method", b"GET"), (b":scheme", b"https"),
                                                (b":path", b"/")])
        frames = [head.serialize()]
        for _ in range(100):  # never END_HEADERS
            continuation = ContinuationFrame(1)
            continuation.data = b"\x00" * 16000
            frames.append(continuation.serialize())
        try:
            client.sock.sendall(b"".join(frames))
        except OSError:
            pass  # (the proxy may close while the rest is sent)
        ended_with(client, h2.errors.ErrorCodes.PROTOCOL_ERROR)
    assert len(defence_logs(caplog, "CONTINUATION flood")) == 1
    still_serves(guarded, tls_origin)


@pytest.mark.parametrize("kind", ["PING", "SETTINGS", "empty DATA"])
def test_a_control_frame_flood_ends_the_connection(guarded: RunningProxy, tls_origin: Origin,
                                                   caplog: pytest.LogCaptureFixture,
                                                   kind: str) -> None:
    with connect(guarded, tls_origin) as client:
        stream_id = client.request("/upload", method="POST", end=False)
        frames = []
        for n in range(100):
            if kind == "PING":
                frame: PingFrame | SettingsFrame | DataFrame = PingFrame(0)
                frame.opaque_data = n.to_bytes(8, "big")
            elif kind == "empty DATA":  # on an open stream, never ending it
                frame = DataFrame(stream_id)
            else:
                frame = SettingsFrame(0)
                frame.settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 65535}
            frames.append(frame.serialize())
        client.sock.sendall(b"".join(frames))
        ended_with(client, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    assert len(defence_logs(caplog, f"{kind} flood")) == 1
    still_serves(guarded, tls_origin)


def test_an_idle_connection_is_closed(make_proxy: Callable[..., RunningProxy],
                                      tls_origin: Origin) -> None:
    with make_proxy(config={"proxy": {"idle_timeout": 0.3}}) as proxy:
        with connect(proxy, tls_origin) as client:
            assert client.get("/bytes/10").status == 200
            ended_with(client, h2.errors.ErrorCodes.NO_ERROR)  # nothing more sent
        still_serves(proxy, tls_origin)


def test_a_client_that_sends_no_preface_is_closed(make_proxy: Callable[..., RunningProxy],
                                                  tls_origin: Origin,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "nectoproxy.http2")
    with make_proxy(config={"proxy": {"header_timeout": 0.3}}) as proxy:
        with connect(proxy, tls_origin, preface=False) as client:
            assert client.alpn == "h2"
            assert client.until(lambda: client.closed)
        assert len(defence_logs(caplog, "no connection preface")) == 1
        still_serves(proxy, tls_origin)


@pytest.mark.parametrize("key", sorted(LIMITS))
def test_limits_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError, match=f"proxy.{key} must be at least 1"):
        config_from_dict({"proxy": {key: 0}})
